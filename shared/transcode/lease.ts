/**
 * A per-video lease in Redis, renewed by a heartbeat while the transcode runs:
 * a second delivery of the same job (connector reclaim, duplicate enqueue) finds
 * it held and is refused, so a video is never transcoded twice at once. If the
 * holder dies its lease lapses after TRANSCODE_LEASE_SECONDS and the next
 * attempt takes over.
 */
import type { Redis } from '../platform/redis.js';
import { RedisLease, revokeLeases } from '../platform/redis-lease.js';

export const leaseKey = (videoId: string) => `pulsevault:transcode:lease:${videoId}`;

export interface Lease {
  /** Aborted when the lease is lost (another holder may take over). */
  lost: AbortSignal;
  release(): Promise<void>;
}

/** Take the video's lease, or null when someone else holds it. Renews every third of `ttlMs`. */
export async function acquireLease(redis: Redis, videoId: string, ttlMs: number): Promise<Lease | null> {
  const lease = new RedisLease(redis, leaseKey(videoId), { ttlMs });
  if (!(await lease.tryAcquire())) return null;
  const lost = new AbortController();
  lease.keepAlive(() => lost.abort(new Error('lease lost')), Math.max(500, Math.floor(ttlMs / 3)));
  return {
    lost: lost.signal,
    async release() {
      await lease.release();
    },
  };
}

/** Revoke every transcode lease of the video (whole, join, each chunk, preview): their ffmpeg runs are aborted. */
export async function revokeTranscodeLeases(redis: Redis, videoId: string): Promise<number> {
  const keys: string[] = [leaseKey(videoId)];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${leaseKey(videoId)}:*`, 'COUNT', 100);
    keys.push(...found);
    cursor = next;
  } while (cursor !== '0');
  return revokeLeases(redis, keys);
}
