/**
 * `pulsevault requeue [--dry-run]` (also `npm run requeue`; the spec's
 * `node scripts/requeue-transcodes.js`): enqueue a transcode for every video
 * whose status is not `transcoded` or whose published ladder is missing (e.g.
 * after a restore that excluded hls/). The scan is shared/transcode/requeue.ts,
 * the one the queue connector runs by itself after Redis lost its data.
 */
import { createAuditLog } from '../../shared/audit/client.js';
import { redisOrExplain } from '../cli-redis.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';
import { requeueVideos } from '../../shared/transcode/requeue.js';

export const summary = 're-enqueue transcodes of every video not transcoded (or missing hls/); --dry-run only counts';

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
  const redis = await redisOrExplain(config, 'requeue');
  if (!redis) return 69; // EX_UNAVAILABLE
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis);
  try {
    const counts = await requeueVideos({ redis, store, audit, log }, { select: 'untranscoded', dryRun });
    process.stdout.write(`${JSON.stringify({ ...counts, dryRun })}\n`);
    return counts.errors > 0 ? 1 : 0;
  } finally {
    await audit.close();
    redis.disconnect();
  }
}
