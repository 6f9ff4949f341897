/**
 * `pulsevault encrypt --all | <videoId>`: encrypt videos stored in the clear (before MEDIA_KEK was
 * set) in place, as finalize stores them now (shared/crypto/migrate.ts): resumable and crash-safe
 * (a rerun finishes what a kill left; videos already encrypted are skipped), audited
 * (`video.encrypted`), progress on stderr, one JSON line per video that failed or must wait on
 * stdout and a summary line at the end. `--switch-grace-ms`: how long requests the media edge let
 * through just before a video's mark get to open its plaintext original (or a clear image) before
 * the switch. Then each video's published renditions and images (shared/crypto/migrate-media.ts):
 * the run ends by waiting out the retirement grace (`--retire-grace-ms`, default a token's longest
 * life and skew plus 30 s) of the last video it switched, and removes the clear segments that
 * players may still have been fetching; a kill meanwhile is finished by a rerun (the deadlines are
 * in the folders). Deleted videos are left to their disposal; videos being transcoded wait for a
 * later run (`busy`). Exit 0 when every video is encrypted (or deleted), 1 when some failed or
 * were busy (run it again).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createAuditLog } from '../../shared/audit/client.js';
import { encryptVideo, SWITCH_GRACE_MS, type EncryptDeps, type EncryptOutcome, type EncryptResult } from '../../shared/crypto/migrate.js';
import { retireGraceMs } from '../../shared/crypto/migrate-media.js';
import { videoKeysFromConfig } from '../../shared/keys/video-keys.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { AppError } from '../../shared/platform/errors.js';
import { isUuid } from '../../shared/platform/ids.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore, videoIdBatches } from '../../shared/video/store.js';
import { redisOrExplain } from '../cli-redis.js';

export const summary = 'encrypt videos stored in the clear in place (--all or one video id): resumable, crash-safe, audited';

const USAGE = 'usage: pulsevault encrypt [--switch-grace-ms N (default 1000)] [--retire-grace-ms N (default: token life + skew)] --all | <videoId>\n';

/** Told as each step of a video becomes durable; the crash tests kill the process here. */
export const stepObserver: Pick<EncryptDeps, 'onStep'> = {};

export async function run(args: string[]): Promise<number> {
  let values: { all?: boolean; 'switch-grace-ms'?: string; 'retire-grace-ms'?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args, allowPositionals: true, options: { all: { type: 'boolean' }, 'switch-grace-ms': { type: 'string' }, 'retire-grace-ms': { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const switchGraceMs = Number(values['switch-grace-ms'] ?? SWITCH_GRACE_MS);
  const retireGiven = values['retire-grace-ms'] === undefined ? null : Number(values['retire-grace-ms']);
  const isGrace = (n: number | null) => n === null || (Number.isInteger(n) && n >= 0);
  if (!isGrace(switchGraceMs) || !isGrace(retireGiven) || (values.all ? positionals.length > 0 : positionals.length !== 1 || !isUuid(positionals[0]!))) {
    process.stderr.write(USAGE);
    return 64;
  }
  const config = loadConfigOrExit({ require: [] });
  const keys = videoKeysFromConfig(config);
  if (!keys) {
    process.stderr.write('pulsevault encrypt: MEDIA_KEK is not set: there is no key to encrypt under (set it on every function first, docs/hipaa.md)\n');
    return 78;
  }
  await keys.verifyKeks();
  const log = createLogger('encrypt', config.logLevel);
  const redis = await redisOrExplain(config, 'encrypt');
  if (!redis) return 69; // EX_UNAVAILABLE: no encryption without its audit entry
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis, keys);
  const counts: Record<EncryptOutcome | 'failed' | 'retired', number> = { encrypted: 0, already: 0, deleted: 0, busy: 0, failed: 0, retired: 0 };
  let bytes = 0;
  let last = 0;
  const progress = (final = false) => {
    if (!final && Date.now() - last < 1000) return;
    last = Date.now();
    const c = counts;
    process.stderr.write(`encrypt: ${c.encrypted} encrypted (${(bytes / 1024 ** 3).toFixed(2)} GiB), ${c.already} already, ${c.deleted} deleted, ${c.busy} busy (transcoding), ${c.failed} failed\n`);
  };
  const deps: EncryptDeps = { store, keys, redis, audit, switchGraceMs, retireGraceMs: retireGiven ?? retireGraceMs(config), onStep: stepObserver.onStep, onBytes: (n) => (bytes += n) };
  /** Videos whose clear segments are still published, with when they may go. */
  const retiring = new Map<string, number>();
  const attempt = async (videoId: string): Promise<EncryptResult | null> => {
    try {
      const result = await encryptVideo(deps, videoId);
      if (result.outcome === 'busy') process.stdout.write(`${JSON.stringify({ videoId, busy: 'transcoding' })}\n`);
      if (result.retireAt === null) retiring.delete(videoId);
      else retiring.set(videoId, result.retireAt);
      return result;
    } catch (err) {
      counts.failed++;
      retiring.delete(videoId);
      // The error's code only: never a key, a path or a field of the video.
      process.stdout.write(`${JSON.stringify({ videoId, error: err instanceof AppError ? err.code : (err as NodeJS.ErrnoException).code ?? 'internal' })}\n`);
      return null;
    }
  };
  const one = async (videoId: string) => {
    const result = await attempt(videoId);
    if (result) counts[result.outcome]++;
    progress();
  };
  /** Wait out each retirement grace (progress every 10 s), then let encryptVideo remove the clear segments. */
  const retireAll = async () => {
    let told = 0;
    for (;;) {
      const next = [...retiring].sort((a, b) => a[1] - b[1])[0];
      if (!next) return;
      const [videoId, at] = next;
      if (Date.now() < at) {
        if (Date.now() - told >= 10_000) {
          told = Date.now();
          process.stderr.write(`encrypt: ${retiring.size} videos still publish their clear segments for players that loaded them; the last go in ${Math.ceil((Math.max(...retiring.values()) - Date.now()) / 1000)} s\n`);
        }
        await sleep(Math.min(at - Date.now(), 10_000));
        continue;
      }
      const result = await attempt(videoId);
      if (result?.outcome === 'encrypted' && result.retireAt === null) counts.retired++;
      else if (result?.outcome === 'busy') counts.busy++;
    }
  };
  try {
    if (values.all) {
      for await (const batch of videoIdBatches(config.videoDir, 100)) for (const videoId of batch) await one(videoId);
    } else {
      await one(positionals[0]!);
    }
    progress(true);
    await retireAll();
    process.stdout.write(`${JSON.stringify({ kek: keys.kek.currentId, ...counts })}\n`);
    return counts.failed + counts.busy > 0 ? 1 : 0;
  } finally {
    await audit.close();
    redis.disconnect();
  }
}
