/** The transcoder module over a real Redis and the real audit writer, without the rest of the stack. */
import path from 'node:path';
import { createAuditLog } from '../../shared/audit/client.js';
import { loadConfig, type Config } from '../../shared/platform/config.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';
import { createRedis, type Redis } from '../../shared/platform/redis.js';
import type { TranscoderDeps } from '../../shared/transcode/transcoder.js';
import type { TranscodeJob } from '../../shared/transcode/queue.js';
import { startAuditWriter } from './audit.js';
import { startRedis, type TestRedis } from './redis.js';

/** A first delivery of the transcode job for `videoId`. */
export const transcodeJob = (videoId: string): TranscodeJob => ({ videoId, attempt: 1, enqueuedAt: new Date().toISOString(), traceId: 'test' });

export interface TranscoderHarness {
  config: Config;
  /** What `config` was loaded from (for a transcoder process of its own on the same media and Redis). */
  env: Record<string, string>;
  deps: TranscoderDeps;
  redis: Redis;
  store: MediaStore;
  /** Its private redis-server (to kill, freeze or restart). */
  server: TestRedis;
  /** The same deps under a config with `env` on top (ENABLE_HEVC, RENDITIONS, …). */
  depsWith(env: Record<string, string>): TranscoderDeps;
  close(): Promise<void>;
}

/**
 * Fast settings (ultrafast, 2 threads, 5 s leases) unless `env` says otherwise; media under `mediaRoot`.
 * With MEDIA_KEK in `env`, the store has the vault's keys (keys under `mediaRoot`), as the transcoder function's.
 */
export async function startTranscoder(mediaRoot: string, env: Record<string, string> = {}): Promise<TranscoderHarness> {
  const server = await startRedis();
  const baseEnv = { HMAC_SECRET: 'x'.repeat(32), MEDIA_ROOT: mediaRoot, REDIS_URL: server.url, FFMPEG_PRESET: 'ultrafast', FFMPEG_THREADS: '2', TRANSCODE_LEASE_SECONDS: '5', ...env };
  const load = (extra: Record<string, string>) => loadConfig({ ...baseEnv, ...extra }, { secretsDir: path.join(mediaRoot, 'none') });
  const config = load({});
  const redis = createRedis(config, { name: 'test' });
  const store = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
  const log = createLogger('test', 'error');
  // record() resolves once the audit writer has the entry on disk: run the real one.
  const writer = await startAuditWriter(server.url, config.auditDir);
  const audit = createAuditLog(config, redis, log);
  const deps: TranscoderDeps = { config, redis, store, audit, log };
  return {
    config,
    env: baseEnv,
    deps,
    redis,
    store,
    server,
    depsWith: (extra) => ({ ...deps, config: load(extra) }),
    async close() {
      await audit.close();
      await writer.stop();
      redis.disconnect();
      await server.close();
    },
  };
}
