/**
 * A per-video lease in Redis, renewed by a heartbeat while the transcode runs:
 * a second delivery of the same job (connector reclaim, duplicate enqueue) finds
 * it held and is refused, so a video is never transcoded twice at once. If the
 * holder dies its lease lapses after TRANSCODE_LEASE_SECONDS and the next
 * attempt takes over.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from '../platform/redis.js';

export const leaseKey = (videoId: string) => `pulsevault:transcode:lease:${videoId}`;

const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

export interface Lease {
  /** Aborted when the lease could not be renewed (another holder may take over). */
  lost: AbortSignal;
  release(): Promise<void>;
}

/** Take the video's lease, or null when someone else holds it. Renews every third of `ttlMs`. */
export async function acquireLease(redis: Redis, videoId: string, ttlMs: number): Promise<Lease | null> {
  const key = leaseKey(videoId);
  const token = randomBytes(12).toString('hex');
  if ((await redis.set(key, token, 'PX', ttlMs, 'NX')) !== 'OK') return null;
  const lost = new AbortController();
  const timer = setInterval(() => {
    redis
      .eval(RENEW, 1, key, token, String(ttlMs))
      .then((ok) => {
        if (ok !== 1) lost.abort(new Error('lease lost'));
      })
      // A Redis blip shorter than the lease is survivable; the next beat retries.
      .catch(() => undefined);
  }, Math.max(500, Math.floor(ttlMs / 3)));
  return {
    lost: lost.signal,
    async release() {
      clearInterval(timer);
      await redis.eval(RELEASE, 1, key, token).catch(() => undefined);
    },
  };
}
