/**
 * `pulsevault retention run [--dry-run] [--rate N]`: finish any disposal a crash left half-done,
 * then dispose of every video past its retainUntil that no legal hold keeps, through the same
 * path as DELETE (shared/lifecycle/retention.ts), at most N a second (default 2). Prints one JSON
 * line per video (ids only) and a summary; exit 1 when any disposal failed.
 */
import { parseArgs } from 'node:util';
import { createAuditLog } from '../../shared/audit/client.js';
import { runRetention } from '../../shared/lifecycle/retention.js';
import { attachMirror } from '../../shared/mirror/attach.js';
import { redisOrExplain } from '../cli-redis.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';

export const summary = 'dispose of videos past their retention date (not held), audited; --dry-run lists them';

const USAGE = 'usage: pulsevault retention run [--dry-run] [--rate disposals/s (default 2)]\n';

export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { 'dry-run': { type: 'boolean' }, rate: { type: 'string' }, help: { type: 'boolean' } } });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stderr.write(USAGE);
    return 0;
  }
  const perSecond = Number(values.rate ?? 2);
  if (positionals.join(' ') !== 'run' || !Number.isFinite(perSecond) || perSecond <= 0) {
    process.stderr.write(USAGE);
    return 64;
  }
  const dryRun = values['dry-run'] === true;
  const config = loadConfigOrExit({ require: [] });
  const log = createLogger('retention', config.logLevel);
  const redis = await redisOrExplain(config, 'retention');
  if (!redis) return 69; // EX_UNAVAILABLE
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis);
  const mirror = attachMirror(store, redis, config, log);
  try {
    const { sweep, outcomes } = await runRetention({ config, store, redis, audit, log }, { dryRun, perSecond, onOutcome: (o) => process.stdout.write(`${JSON.stringify(o)}\n`) });
    const count = (action: string) => outcomes.filter((o) => o.action === action).length;
    const totals = { dryRun, finishedDisposals: sweep?.finished ?? 0, disposed: count('disposed'), wouldDispose: count('would_dispose'), held: count('held'), failed: count('failed') + (sweep?.errors ?? 0) };
    process.stdout.write(`${JSON.stringify(totals)}\n`);
    return totals.failed > 0 ? 1 : 0;
  } finally {
    await mirror?.close();
    await audit.close();
    redis.disconnect();
  }
}
