/**
 * `pulsevault keys rotate [--rate N]`: rewrap every video's data key under the current KEK
 * (MEDIA_KEK), reading the old ones with MEDIA_KEK_PREVIOUS. Media is not touched: only the small
 * key files in KEY_DIR are rewritten, each atomically, so a rotation killed at any point is
 * finished by running it again (keys already under the current KEK are skipped). Each rewrap is
 * audited (`keys.rewrapped`), the finished pass too (`keys.rotated`); progress goes to stderr.
 * When the pass is complete, check values of KEKs no key uses are removed: those KEKs may then go
 * from MEDIA_KEK_PREVIOUS. Exit 0 when every key is under the current KEK, 1 otherwise.
 *
 * `pulsevault keys status`: how many data keys each KEK wraps (JSON), nothing changed.
 */
import { parseArgs } from 'node:util';
import { createAuditLog } from '../../shared/audit/client.js';
import { videoKeysFromConfig } from '../../shared/keys/video-keys.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { AppError } from '../../shared/platform/errors.js';
import { createLogger } from '../../shared/platform/log.js';
import { redisOrExplain } from '../cli-redis.js';

export const summary = 'rotate the media KEK: rewrap every data key under MEDIA_KEK (resumable, audited); `keys status` counts keys per KEK';

const USAGE = 'usage: pulsevault keys rotate | pulsevault keys status\n';

export async function run(args: string[]): Promise<number> {
  let positionals: string[];
  try {
    ({ positionals } = parseArgs({ args, allowPositionals: true, options: {} }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const sub = positionals.join(' ');
  if (sub !== 'rotate' && sub !== 'status') {
    process.stderr.write(USAGE);
    return 64;
  }
  const config = loadConfigOrExit({ require: [] });
  const keys = videoKeysFromConfig(config);
  if (!keys) {
    process.stderr.write('pulsevault keys: MEDIA_KEK is not set (media is stored in the clear): nothing to rotate\n');
    return 78;
  }
  await keys.verifyKeks();
  if (sub === 'status') {
    const perKek: Record<string, number> = {};
    for await (const e of keys.entries()) perKek[e.kekId] = (perKek[e.kekId] ?? 0) + 1;
    process.stdout.write(`${JSON.stringify({ current: keys.kek.currentId, keys: perKek })}\n`);
    return 0;
  }

  const log = createLogger('keys', config.logLevel);
  const redis = await redisOrExplain(config, 'keys rotate');
  if (!redis) return 69; // EX_UNAVAILABLE: no rewrap without its audit entry
  const audit = createAuditLog(config, redis, log);
  const actor = { userId: null, role: 'operator' };
  const counts = { rewrapped: 0, current: 0, failed: 0 };
  let last = 0;
  const progress = (final = false) => {
    if (!final && Date.now() - last < 1000) return;
    last = Date.now();
    process.stderr.write(`keys rotate: ${counts.rewrapped} rewrapped, ${counts.current} already under ${keys.kek.currentId}, ${counts.failed} failed\n`);
  };
  try {
    for await (const { videoId, kekId } of keys.entries()) {
      if (kekId === keys.kek.currentId) {
        counts.current++;
        continue;
      }
      try {
        // Audited first: a rewrap is never without its entry (a crash after it repeats a harmless entry).
        await audit.record({ category: 'admin', action: 'keys.rewrapped', outcome: 'success', reason: keys.kek.currentId, actor, videoId });
        if ((await keys.rewrap(videoId)) === 'rewrapped') counts.rewrapped++;
      } catch (err) {
        counts.failed++;
        // The error's code only: never a key, and a KeyUnwrapError names just the KEK id.
        process.stdout.write(`${JSON.stringify({ videoId, error: err instanceof AppError ? err.code : (err as NodeJS.ErrnoException).code ?? 'internal' })}\n`);
      }
      progress();
    }
    progress(true);
    if (counts.failed > 0) return 1;
    const retired = await keys.retireUnusedKeks();
    await audit.record({ category: 'admin', action: 'keys.rotated', outcome: 'success', reason: keys.kek.currentId, actor, videoId: null });
    process.stdout.write(`${JSON.stringify({ kek: keys.kek.currentId, ...counts, retiredKeks: retired })}\n`);
    return 0;
  } finally {
    await audit.close();
    redis.disconnect();
  }
}
