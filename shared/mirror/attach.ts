/** Wiring of the optional PostgreSQL mirror to a MediaStore: every meta.json write, and the catch-up of those it missed. */
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import type { MediaStore } from '../video/store.js';
import type { Redis } from '../platform/redis.js';
import { MirrorCatchUp, type CatchUpOptions } from './catch-up.js';
import { errorCode, openMirror, type MetadataMirror } from './mirror.js';

export interface AttachedMirror {
  mirror: MetadataMirror;
  catchUp: MirrorCatchUp;
  /** Stop the catch-up, then close the database pool. */
  close(): Promise<void>;
}

/**
 * Mirror every meta.json write of `store` (no-op without METADATA_DSN),
 * remember in Redis the writes the mirror missed and re-mirror them in the
 * background. Call it once at function setup; it starts the schema migration
 * and the catch-up; `close()` it on shutdown.
 */
export function attachMirror(store: MediaStore, redis: Redis, config: Config, log: Logger, catchUpOptions?: CatchUpOptions): AttachedMirror | null {
  const mirror = openMirror(config, log);
  if (!mirror) return null;
  mirror.ready().catch((err: unknown) => log.warn({ code: errorCode(err) }, 'metadata mirror schema not ready; will retry on the next write'));
  const catchUp = new MirrorCatchUp(mirror, store, redis, log, catchUpOptions);
  store.onWrite(async (meta) => {
    if (!(await mirror.record(meta))) await catchUp.markPending(meta.videoId);
  });
  catchUp.start();
  return {
    mirror,
    catchUp,
    async close() {
      await catchUp.stop();
      await mirror.close();
    },
  };
}
