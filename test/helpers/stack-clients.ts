/**
 * What a test drives a running local stack with from outside, configured as the
 * stack's functions are: its Redis, the video store, an audit log (close it in
 * afterAll), a video's transcode audit trail and a wait for its status.
 */
import path from 'node:path';
import { createAuditLog, type AuditLog } from '../../shared/audit/client.js';
import { loadConfig } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import type { Redis } from '../../shared/platform/redis.js';
import { MediaStore, type VideoMeta } from '../../shared/video/store.js';
import { readAuditEntries, type AuditLine } from './audit.js';
import { TEST_HMAC_SECRET, type TestStack } from './stack.js';
import { waitFor } from './wait.js';

export interface StackClients {
  redis: Redis;
  store: MediaStore;
  audit: AuditLog;
  /** The video's `transcode` audit entries, in file order. */
  transcodeEntries(videoId: string): AuditLine[];
  untilStatus(videoId: string, status: VideoMeta['status'], ms?: number): Promise<unknown>;
}

export function stackClients(stack: TestStack): StackClients {
  const redis = stack.redis.client();
  const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url }, { secretsDir: path.join(stack.mediaRoot, 'none') });
  const store = new MediaStore(config.videoDir, redis);
  return {
    redis,
    store,
    audit: createAuditLog(config, redis, createLogger('test', 'error')),
    transcodeEntries: (videoId) => readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.category === 'transcode' && e.videoId === videoId),
    untilStatus: (videoId, status, ms = 90_000) => waitFor(async () => (await store.read(videoId)).status === status, ms, `video to be ${status}`, 200),
  };
}
