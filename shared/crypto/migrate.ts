/**
 * Encrypting a video stored in the clear (before MEDIA_KEK was set) in place, as finalize would have
 * stored it: its data key made and wrapped, the original in the chunked format (./chunked.ts), the
 * PHI fields of meta.json sealed (the store seals them on write once the key exists), `encrypted: true`.
 *
 *   data key (made, or found after a crash) → ciphertext beside the original (`<original>.encrypting`,
 *   fsynced; its plaintext hash must be meta.json's checksum) → the edge's mark → audit entry
 *   (durable) → the grace → under the video's meta lock: rename over the original (atomic; the
 *   plaintext's last link goes) → fsync dir → meta.json rewritten (sealed, `encrypted: true`)
 *
 * Every reader decides per opened file (the magic, ./original-response.ts), so a range read is
 * answered from the plaintext or the ciphertext, whole, at any instant, and one already reading the
 * plaintext keeps its open file. The media edge is the exception: nginx caches a grant for a
 * plaintext original for its token's life and would then send the ciphertext under it. The mark
 * (ORIGINAL_ENCRYPTED_MARK, tested by nginx before it sends an original, as the deleted mark) sends
 * every later request of that original to the stream function; the grace lets a request that
 * passed nginx's test just before the mark open the file before the rename (it keeps the plaintext);
 * once the mark is there, the stream function sends a plaintext original from the file it opened
 * rather than redirecting nginx to the path, which the rename may have given the ciphertext. A kill at any point leaves either the plaintext original (and at
 * most a stale `.encrypting`, rewritten by the rerun) or the ciphertext one whose meta.json the rerun
 * finishes. The key file is made before any ciphertext, so ciphertext never lacks its key.
 *
 * Not touched: a deleted video (the disposal owns it), and one being transcoded (status queued or
 * transcoding, or a transcode lease held): its ffmpeg may have been handed the plaintext path and
 * would read the ciphertext under it. Those are `busy` and a later run encrypts them. The status
 * cannot move to `transcoding` while the switch holds the meta lock (the transcoder writes it through
 * the same lock before it opens the original).
 *
 * Then its published renditions and images, which its transcode wrote in the clear (./migrate-media.ts).
 */
import { rename, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import { deriveKey, destroyDataKey, type VideoKeys } from '../keys/video-keys.js';
import { fsyncDir, writeFileAtomic } from '../platform/atomic-file.js';
import { AppError } from '../platform/errors.js';
import type { Redis } from '../platform/redis.js';
import type { MediaStore } from '../video/store.js';
import { encryptFile, isEncryptedFile } from './chunked.js';
import { ORIGINAL_ENCRYPTED_MARK } from './original-response.js';
import { isGone, isTranscoding, OPERATOR } from './migrate-guards.js';
import { clearMediaLeft, encryptMedia, type MediaStep } from './migrate-media.js';

/** Points right after each durable step, in order (the crash tests kill the process there). */
export const ENCRYPT_STEPS = ['after-key', 'after-ciphertext', 'after-audit', 'after-switch'] as const;
export type EncryptStep = (typeof ENCRYPT_STEPS)[number];

export type EncryptOutcome = 'encrypted' | 'already' | 'deleted' | 'busy';

/** Between the mark and the switch: far above the time nginx takes from testing for the mark to opening the file. */
export const SWITCH_GRACE_MS = 1000;

export interface EncryptDeps {
  /** The vault's store, with Redis (its meta lock, the cache it invalidates) and the keys. */
  store: MediaStore;
  keys: VideoKeys;
  redis: Redis;
  audit: AuditLog;
  onStep?: (step: EncryptStep | MediaStep) => void;
  /** SWITCH_GRACE_MS unless told. */
  switchGraceMs?: number;
  /** Between a rendition directory's switch to encrypted segments and the removal of its clear ones (retireGraceMs()). */
  retireGraceMs: number;
  /** Plaintext bytes encrypted so far (progress lines). */
  onBytes?: (n: number) => void;
}

/** The stored original does not hash to meta.json's checksum: a scrub finding, not something to encrypt. */
export class OriginalMismatchError extends AppError {
  constructor() {
    super(409, 'original_mismatch', 'the original does not match the checksum in meta.json (run pulsevault scrub); it was left as it is');
  }
}

export interface EncryptResult {
  outcome: EncryptOutcome;
  /** When the clear segments still published may be removed (by encryptVideo again), or null. */
  retireAt: number | null;
}

/** The original, then the published media; `encrypted` when either changed. */
export async function encryptVideo(d: EncryptDeps, videoId: string): Promise<EncryptResult> {
  const original = await encryptOriginal(d, videoId);
  if (original === 'deleted' || original === 'busy') return { outcome: original, retireAt: null };
  const media = await encryptMedia({ ...d, switchGraceMs: d.switchGraceMs ?? SWITCH_GRACE_MS }, videoId);
  const outcome = media.outcome === 'busy' || media.outcome === 'deleted' ? media.outcome : original === 'encrypted' ? original : media.outcome;
  return { outcome, retireAt: media.retireAt };
}

async function encryptOriginal(d: EncryptDeps, videoId: string): Promise<EncryptOutcome> {
  const before = await d.store.read(videoId);
  if (await isGone(d.store, before)) return 'deleted';
  const original = path.join(d.store.dir(videoId), before.original);
  const part = `${original}.encrypting`;
  if (await isEncryptedFile(original)) {
    if (before.encrypted === true) return 'already';
    return switchOver(d, videoId, null); // renamed just before a crash: meta.json is what is left
  }
  if (await isTranscoding(d.redis, before)) {
    await rm(part, { force: true }); // a killed run's partial ciphertext: the run that encrypts writes it anew
    return 'busy';
  }

  const dataKey = await d.keys.create(videoId);
  d.onStep?.('after-key');
  const hashed = await encryptFile(original, part, deriveKey(dataKey, 'original'), videoId);
  d.onBytes?.(hashed.size);
  if (hashed.checksum !== before.checksum || hashed.size !== before.size) {
    await rm(part, { force: true });
    throw new OriginalMismatchError();
  }
  d.onStep?.('after-ciphertext');
  await writeFileAtomic(path.join(d.store.dir(videoId), ORIGINAL_ENCRYPTED_MARK), '');
  const marked = Date.now();
  // Before the switch: an encrypted original always has its entry (a crash after it repeats it).
  await d.audit.record({ category: 'admin', action: 'video.encrypted', outcome: 'success', actor: OPERATOR, videoId });
  d.onStep?.('after-audit');
  await sleep(Math.max(0, (d.switchGraceMs ?? SWITCH_GRACE_MS) - (Date.now() - marked)));
  return switchOver(d, videoId, part);
}

/** Under the meta lock: the ciphertext renamed over the original (unless already), then meta.json sealed and marked. */
async function switchOver(d: EncryptDeps, videoId: string, part: string | null): Promise<EncryptOutcome> {
  const release = await d.store.lock(videoId);
  try {
    const meta = await d.store.read(videoId);
    if (await isGone(d.store, meta)) {
      if (part) await rm(part, { force: true });
      // A disposal that shredded before this run made the key: shred it again (idempotent).
      await destroyDataKey(d.keys.keyDir, videoId);
      return 'deleted';
    }
    if (part) {
      if (await isTranscoding(d.redis, meta)) {
        await rm(part, { force: true });
        return 'busy';
      }
      await rename(part, path.join(d.store.dir(videoId), meta.original));
      await fsyncDir(d.store.dir(videoId));
      d.onStep?.('after-switch');
    }
    // Honest from the first instant: the renditions and images the transcode published are still clear.
    await d.store.write({ ...meta, encrypted: true, ...((await clearMediaLeft(d.store.dir(videoId))) ? { clearMedia: true as const } : {}) });
    return 'encrypted';
  } finally {
    await release();
  }
}
