/**
 * What `pulsevault encrypt` leaves alone (./migrate.ts, ./migrate-media.ts): a deleted video (the
 * disposal owns it), and one being transcoded (status queued or transcoding, or a transcode lease
 * held): its ffmpeg may have been handed the plaintext path, and its publish replaces `hls/` whole.
 */
import { isDeleted } from '../lifecycle/tombstone.js';
import type { Redis } from '../platform/redis.js';
import { leaseKey } from '../transcode/lease.js';
import type { MediaStore, VideoMeta } from '../video/store.js';

/** Who `pulsevault encrypt` audits as. */
export const OPERATOR = { userId: null, role: 'operator' };
const TRANSCODING: ReadonlySet<VideoMeta['status']> = new Set(['queued', 'transcoding']);

/** Whether any transcode lease of the video (whole, join, chunk, preview) is held. */
async function transcodeLeaseHeld(redis: Redis, videoId: string): Promise<boolean> {
  if ((await redis.exists(leaseKey(videoId))) === 1) return true;
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${leaseKey(videoId)}:*`, 'COUNT', 1000);
    if (found.length > 0) return true;
    cursor = next;
  } while (cursor !== '0');
  return false;
}

export async function isGone(store: MediaStore, meta: VideoMeta): Promise<boolean> {
  return meta.status === 'deleted' || meta.deletion !== undefined || (await isDeleted(store.videoDir, meta.videoId));
}

/** Being transcoded, or about to be. */
export async function isTranscoding(redis: Redis, meta: VideoMeta): Promise<boolean> {
  return TRANSCODING.has(meta.status) || (await transcodeLeaseHeld(redis, meta.videoId));
}
