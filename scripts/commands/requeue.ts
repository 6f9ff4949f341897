/**
 * `pulsevault requeue [--dry-run]` (also `npm run requeue`; the spec's
 * `node scripts/requeue-transcodes.js`): enqueue a transcode for every video
 * whose status is not `transcoded` or whose published ladder is missing (e.g.
 * after a restore that excluded hls/).
 *
 * Streams VIDEO_DIR with fs.opendir, a bounded number of videos at a time, so
 * memory stays flat for 100k videos. Safe to run twice: a video that already has
 * a job waiting, running or scheduled for retry is not enqueued again.
 */
import { opendir } from 'node:fs/promises';
import path from 'node:path';
import { createAuditLog } from '../../shared/audit/client.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { NotFoundError } from '../../shared/platform/errors.js';
import { exists } from '../../shared/platform/exists.js';
import { createLogger } from '../../shared/platform/log.js';
import { isVideoId, MediaStore } from '../../shared/video/store.js';
import { createRedis } from '../../shared/platform/redis.js';
import { OUTPUT_DIR } from '../../shared/transcode/transcoder.js';
import { MASTER_NAME } from '../../shared/transcode/playlists.js';
import { enqueueTranscode } from '../../shared/transcode/queue.js';

export const summary = 're-enqueue transcodes of every video not transcoded (or missing hls/); --dry-run only counts';

const PARALLEL = 8;

export async function run(args: string[]): Promise<number> {
  const dryRun = args.includes('--dry-run');
  const unknown = args.filter((a) => a !== '--dry-run');
  if (unknown.length > 0) {
    process.stderr.write(`usage: pulsevault requeue [--dry-run]\n`);
    return 64;
  }
  // Requeue signs nothing: it needs Redis and the media volume, not HMAC_SECRET.
  const config = loadConfigOrExit({ require: [] });
  const log = createLogger('requeue', config.logLevel);
  const redis = createRedis(config, { name: 'requeue' });
  // Without Redis every video would fail one by one; say it once (host and port only: a URL may hold a password).
  if (!(await redis.ping().then(() => true, () => false))) {
    const where = config.redis.url ? new URL(config.redis.url).host : `${config.redis.host}:${config.redis.port}`;
    process.stderr.write(`pulsevault requeue: Redis at ${where} does not answer; is the stack running (npm start), is REDIS_URL right?\n`);
    redis.disconnect();
    return 69; // EX_UNAVAILABLE
  }
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis);
  const counts = { scanned: 0, enqueued: 0, alreadyQueued: 0, upToDate: 0, noMeta: 0, errors: 0 };

  const visit = async (videoId: string) => {
    counts.scanned++;
    try {
      const meta = await store.read(videoId);
      const published = await exists(path.join(store.dir(videoId), OUTPUT_DIR, MASTER_NAME));
      if (meta.status === 'transcoded' && published) return void counts.upToDate++;
      if (dryRun) return void counts.enqueued++;
      const { enqueued } = await enqueueTranscode(redis, videoId, null, { store, audit });
      counts[enqueued ? 'enqueued' : 'alreadyQueued']++;
    } catch (err) {
      // A directory without meta.json is an interrupted finalize, not ours to queue.
      if (err instanceof NotFoundError) return void counts.noMeta++;
      counts.errors++;
      log.warn({ videoId, err: (err as Error).message }, 'cannot requeue');
    }
  };

  try {
    const running = new Set<Promise<void>>();
    for await (const entry of await opendir(config.videoDir)) {
      if (!entry.isDirectory() || !isVideoId(entry.name)) continue;
      const p = visit(entry.name).finally(() => running.delete(p));
      running.add(p);
      if (running.size >= PARALLEL) await Promise.race(running);
    }
    await Promise.all(running);
  } finally {
    await audit.close();
    redis.disconnect();
  }
  process.stdout.write(`${JSON.stringify({ ...counts, dryRun })}\n`);
  return counts.errors > 0 ? 1 : 0;
}
