/**
 * The vault's integrity check (`pulsevault scrub`): for every video directory,
 * verify meta.json's own checksum (parseMeta), then re-hash the original and
 * compare it with the checksum meta.json recorded at finalize. An encrypted
 * original (shared/crypto/chunked.ts) is decrypted chunk by chunk: every tag is
 * checked (a flipped ciphertext byte is `ciphertext_tampered`) and the plaintext
 * is hashed. Sealed images (poster, sprite sheets: shared/crypto/images.ts) and
 * a fanned-out transcode's sealed chunks and their sheets waiting for the join
 * (`.chunks/`, shared/transcode/fanout.ts) have every tag checked too; they have no
 * recorded checksum. Problems carry ids and paths within the video only, no PHI.
 *
 * It streams: VIDEO_DIR is read with opendir (no listing held in memory) and
 * each original is hashed in chunks, paced to a byte rate so a scrub can run
 * beside production without starving stream requests of disk bandwidth.
 */
import { opendir, readdir, readFile, stat } from 'node:fs/promises';
import { DELETED_MARK } from '../lifecycle/tombstone.js';
import path from 'node:path';
import { encryptedSize, IntegrityError, isEncryptedFile, MissingKeyError, plaintextChecksum, verifyEncryptedFile } from '../crypto/chunked.js';
import { sealedImageFiles } from '../crypto/images.js';
import { deriveKey, type KeyPurpose, type VideoKeys } from '../keys/video-keys.js';
import { CHUNKS_DIR, sealedChunkFiles } from '../transcode/fanout.js';
import { isVideoId, MetaCorruptError, parseMeta } from './store.js';

export type ProblemKind =
  | 'meta_missing'
  | 'meta_corrupt'
  | 'disposal_unfinished'
  | 'original_missing'
  | 'original_unreadable'
  | 'size_mismatch'
  | 'checksum_mismatch'
  | 'ciphertext_tampered'
  | 'image_unreadable'
  | 'chunk_unreadable'
  | 'key_missing';

export interface Problem {
  videoId: string;
  problem: ProblemKind;
  detail: string;
}

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Paces a byte stream to `bytesPerSecond` over the whole run: after each chunk it
 * waits until the time that many bytes are due at that rate. Rate 0 = unpaced.
 */
export class Pacer {
  private readonly start: number;
  private bytes = 0;

  constructor(
    private readonly bytesPerSecond: number,
    private readonly clock: Clock = realClock,
  ) {
    this.start = clock.now();
  }

  async consumed(n: number): Promise<void> {
    this.bytes += n;
    if (this.bytesPerSecond <= 0) return;
    const wait = this.start + (this.bytes / this.bytesPerSecond) * 1000 - this.clock.now();
    if (wait > 0) await this.clock.sleep(wait);
  }
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
/** Why a read failed, in a problem's detail: the errno code, else the error's name. */
const readFailure = (err: unknown) => errno(err) ?? (err instanceof Error ? err.name : 'unknown');

/** Check one video directory; resolves with its problem, or null when it is intact. */
export async function scrubVideo(videoDir: string, videoId: string, pacer: Pacer, onBytes: (n: number) => void = () => {}, keys: VideoKeys | null = null): Promise<Problem | null> {
  const dir = path.join(videoDir, videoId);
  const problem = (kind: ProblemKind, detail: string): Problem => ({ videoId, problem: kind, detail });
  const paced = (n: number) => {
    onBytes(n);
    return pacer.consumed(n);
  };

  let raw: string;
  try {
    raw = await readFile(path.join(dir, 'meta.json'), 'utf8');
  } catch (err) {
    return problem('meta_missing', errno(err) === 'ENOENT' ? 'meta.json does not exist' : `meta.json unreadable (${errno(err)})`);
  }
  let meta;
  try {
    meta = parseMeta(videoId, raw);
  } catch (err) {
    if (err instanceof MetaCorruptError) return problem('meta_corrupt', err.message);
    throw err;
  }
  // A tombstone proves a disposal: nothing may be left but itself and the deleted mark (shared/lifecycle/).
  if (meta.status === 'deleted') {
    const left = (await readdir(dir)).filter((name) => name !== 'meta.json' && name !== DELETED_MARK);
    if (!meta.deletion?.disposedAt || left.length > 0) return problem('disposal_unfinished', `${left.length} entries left; disposedAt ${meta.deletion?.disposedAt ? 'set' : 'not set'}`);
    return null;
  }
  // The original's name comes from meta.json: it must name a file inside this directory.
  if (typeof meta.original !== 'string' || meta.original !== path.basename(meta.original) || meta.original.startsWith('.')) {
    return problem('meta_corrupt', 'meta.json names no valid original file');
  }
  const original = path.join(dir, meta.original);
  let size: number;
  try {
    size = (await stat(original)).size;
  } catch (err) {
    return problem('original_missing', errno(err) === 'ENOENT' ? `${meta.original} does not exist` : `${meta.original} unreadable (${errno(err)})`);
  }
  const expected = (await isEncryptedFile(original)) ? encryptedSize(meta.size) : meta.size;
  if (size !== expected) return problem('size_mismatch', `${meta.original} has ${size} bytes, ${expected} expected for the ${meta.size} meta.json records`);
  let actual: string;
  try {
    ({ checksum: actual } = await plaintextChecksum(original, videoId, async () => (keys ? keys.dataKey(videoId) : null), paced));
  } catch (err) {
    if (err instanceof IntegrityError) return problem('ciphertext_tampered', `${meta.original}: ${err.message}`);
    if (err instanceof MissingKeyError) return problem('key_missing', `${meta.original} is encrypted and ${keys ? 'its data key is missing' : 'no MEDIA_KEK is configured'}`);
    return problem('original_unreadable', `${meta.original} could not be read (${readFailure(err)})`);
  }
  if (actual !== meta.checksum) return problem('checksum_mismatch', `${meta.original} hashes to ${actual}, meta.json records ${meta.checksum}`);
  const sealed = [...(await sealedImageFiles(dir)).map((file) => ({ file, purpose: 'image' as const })), ...(await sealedChunkFiles(dir))];
  return scrubSealedFiles(dir, videoId, keys, sealed, paced, problem);
}

/** Every tag of the video's sealed files other than the original (images, chunks); the first problem found, or null. */
async function scrubSealedFiles(
  dir: string,
  videoId: string,
  keys: VideoKeys | null,
  sealed: { file: string; purpose: KeyPurpose }[],
  paced: (n: number) => Promise<void>,
  problem: (kind: ProblemKind, detail: string) => Problem,
): Promise<Problem | null> {
  if (sealed.length === 0) return null;
  const dataKey = keys ? await keys.dataKey(videoId).catch(() => null) : null;
  if (!dataKey) return problem('key_missing', `${sealed[0]!.file} is sealed and ${keys ? 'its data key is missing' : 'no MEDIA_KEK is configured'}`);
  for (const { file, purpose } of sealed) {
    try {
      await verifyEncryptedFile(path.join(dir, file), deriveKey(dataKey, purpose), videoId, paced);
    } catch (err) {
      if (err instanceof IntegrityError) return problem('ciphertext_tampered', `${file}: ${err.message}`);
      // A join that published meanwhile removes `.chunks/`: gone is not damage.
      if (errno(err) === 'ENOENT' && file.startsWith(`${CHUNKS_DIR}/`)) continue;
      return problem(purpose === 'chunk' ? 'chunk_unreadable' : 'image_unreadable', `${file} could not be read (${readFailure(err)})`);
    }
  }
  return null;
}

export interface ScrubReport {
  videos: number;
  problems: number;
  skipped: number;
  bytes: number;
  seconds: number;
}

export async function scrub(
  videoDir: string,
  /** `bytesPerSecond` 0 = unpaced. */
  options: { bytesPerSecond: number; onProblem(p: Problem): void; onProgress(r: ScrubReport): void; clock?: Clock; keys?: VideoKeys | null },
): Promise<ScrubReport> {
  const clock = options.clock ?? realClock;
  const started = clock.now();
  const pacer = new Pacer(options.bytesPerSecond, clock);
  const report: ScrubReport = { videos: 0, problems: 0, skipped: 0, bytes: 0, seconds: 0 };
  const tick = () => {
    report.seconds = (clock.now() - started) / 1000;
    options.onProgress(report);
  };
  for await (const entry of await opendir(videoDir)) {
    // Anything that is not a video directory (temp dirs of an in-flight publish, stray files) is not ours to judge.
    if (!entry.isDirectory() || !isVideoId(entry.name)) {
      report.skipped++;
      continue;
    }
    const found = await scrubVideo(videoDir, entry.name, pacer, (n) => {
      report.bytes += n;
      tick();
    }, options.keys ?? null);
    report.videos++;
    if (found) {
      report.problems++;
      options.onProblem(found);
    }
    tick();
  }
  report.seconds = (clock.now() - started) / 1000;
  return report;
}
