/**
 * `pulsevault encrypt --all | <videoId>`: encrypt videos stored in the clear (before MEDIA_KEK was
 * set) in place, as finalize stores them now (shared/crypto/migrate.ts): resumable and crash-safe
 * (a rerun finishes what a kill left; videos already encrypted are skipped), audited
 * (`video.encrypted`), progress on stderr, one JSON line per video that failed or must wait on
 * stdout and a summary line at the end. `--switch-grace-ms`: how long requests the media edge let
 * through just before a video's mark get to open its plaintext original before the switch. Deleted videos are left to their disposal; videos being
 * transcoded wait for a later run (`busy`). Exit 0 when every video is encrypted (or deleted), 1
 * when some failed or were busy (run it again).
 */
import { parseArgs } from 'node:util';
import { createAuditLog } from '../../shared/audit/client.js';
import { encryptVideo, SWITCH_GRACE_MS, type EncryptDeps, type EncryptOutcome } from '../../shared/crypto/migrate.js';
import { videoKeysFromConfig } from '../../shared/keys/video-keys.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { AppError } from '../../shared/platform/errors.js';
import { isUuid } from '../../shared/platform/ids.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore, videoIdBatches } from '../../shared/video/store.js';
import { redisOrExplain } from '../cli-redis.js';

export const summary = 'encrypt videos stored in the clear in place (--all or one video id): resumable, crash-safe, audited';

const USAGE = 'usage: pulsevault encrypt [--switch-grace-ms N (default 1000)] --all | <videoId>\n';

/** Told as each step of a video becomes durable; the crash tests kill the process here. */
export const stepObserver: Pick<EncryptDeps, 'onStep'> = {};

export async function run(args: string[]): Promise<number> {
  let values: { all?: boolean; 'switch-grace-ms'?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args, allowPositionals: true, options: { all: { type: 'boolean' }, 'switch-grace-ms': { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const switchGraceMs = Number(values['switch-grace-ms'] ?? SWITCH_GRACE_MS);
  if (!Number.isInteger(switchGraceMs) || switchGraceMs < 0 || (values.all ? positionals.length > 0 : positionals.length !== 1 || !isUuid(positionals[0]!))) {
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
  const counts: Record<EncryptOutcome | 'failed', number> = { encrypted: 0, already: 0, deleted: 0, busy: 0, failed: 0 };
  let bytes = 0;
  let last = 0;
  const progress = (final = false) => {
    if (!final && Date.now() - last < 1000) return;
    last = Date.now();
    const c = counts;
    process.stderr.write(`encrypt: ${c.encrypted} encrypted (${(bytes / 1024 ** 3).toFixed(2)} GiB), ${c.already} already, ${c.deleted} deleted, ${c.busy} busy (transcoding), ${c.failed} failed\n`);
  };
  const deps: EncryptDeps = { store, keys, redis, audit, switchGraceMs, onStep: stepObserver.onStep, onBytes: (n) => (bytes += n) };
  const one = async (videoId: string) => {
    try {
      const outcome = await encryptVideo(deps, videoId);
      counts[outcome]++;
      if (outcome === 'busy') process.stdout.write(`${JSON.stringify({ videoId, busy: 'transcoding' })}\n`);
    } catch (err) {
      counts.failed++;
      // The error's code only: never a key, a path or a field of the video.
      process.stdout.write(`${JSON.stringify({ videoId, error: err instanceof AppError ? err.code : (err as NodeJS.ErrnoException).code ?? 'internal' })}\n`);
    }
    progress();
  };
  try {
    if (values.all) {
      for await (const batch of videoIdBatches(config.videoDir, 100)) for (const videoId of batch) await one(videoId);
    } else {
      await one(positionals[0]!);
    }
    progress(true);
    process.stdout.write(`${JSON.stringify({ kek: keys.kek.currentId, ...counts })}\n`);
    return counts.failed + counts.busy > 0 ? 1 : 0;
  } finally {
    await audit.close();
    redis.disconnect();
  }
}
