/**
 * Transcode fan-out: a video longer than one chunk (TRANSCODE_CHUNK_SEGMENTS ×
 * SEGMENT_SECONDS) is planned as time chunks on segment boundaries, each its own
 * queue job, so any free transcoder replica takes one; the chunk that completes
 * the set enqueues the join, which copies the chunks into the published layout.
 *
 * On disk, in the video directory (the source of truth, as meta.json):
 * - `.chunks/plan.json`: the plan (chunk length, count, encode settings). A
 *   re-plan with the same settings keeps the chunks already done.
 * - `.chunks/<n>.mp4`: chunk n, every rung as its own video track, no audio;
 *   `.chunks/thumbs_<n>_*.jpg`: its seek-thumbnail sheets. Encoded into a work
 *   directory of the attempt (`<n>.tmp-<random>/`), then — when the video has a
 *   data key — sealed (shared/crypto/chunked.ts: the chunk under its key for
 *   `chunk`, the sheets as published images are), fsynced and renamed into place,
 *   the chunk last: present = complete, and sealed in an encrypted vault. Readers
 *   tell a sealed file by its magic (a clear vault's, or an older build's, are clear).
 *
 * Why chunks of every rung rather than rungs spread across replicas: the decode
 * of the source (a large share of the cost at 1080p) is then done once per
 * frame, as in the single-pass encode, and the speed-up grows with the number
 * of chunks, not the number of rungs. Why audio is encoded in the join, once:
 * AAC primes every encode with 1024 samples of silence, so per-chunk audio
 * would click or drift at every boundary; and it is cheap (docs/transcoding.md).
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { encryptFile, isEncryptedFile } from '../crypto/chunked.js';
import { sealImage } from '../crypto/images.js';
import { deriveKey } from '../keys/video-keys.js';
import { fsyncDir, fsyncFile, writeFileAtomic } from '../platform/atomic-file.js';
import { exists } from '../platform/exists.js';
import type { Redis } from '../platform/redis.js';
import { UnprocessableError } from '../platform/errors.js';
import { probe, type ProbeResult } from '../video/probe.js';
import { SEGMENT_SECONDS, type EncodeOptions } from './ffmpeg-command.js';

export const CHUNKS_DIR = '.chunks';
const PLAN_FILE = 'plan.json';

export interface ChunkPlan {
  chunkSeconds: number;
  /** Start second of each chunk; chunk n runs to the next one's start (the last to the end). */
  starts: number[];
  /** What every chunk is encoded with: a re-plan with other settings starts over. */
  settings: Omit<EncodeOptions, 'source' | 'outDir'>;
}

export interface ChunkRange {
  start: number;
  /** null for the last chunk: to the end of the source. */
  seconds: number | null;
}

/**
 * The chunks of a source of `duration` seconds, or null when it stays one job
 * (chunking off, or not longer than one chunk). A tail shorter than one segment
 * is folded into the chunk before it rather than becoming a chunk of its own.
 */
export function planChunks(duration: number, chunkSegments: number): number[] | null {
  if (chunkSegments <= 0) return null;
  const chunkSeconds = chunkSegments * SEGMENT_SECONDS;
  let count = Math.ceil(duration / chunkSeconds);
  if (count > 1 && duration - (count - 1) * chunkSeconds < SEGMENT_SECONDS) count -= 1;
  if (count <= 1) return null;
  return Array.from({ length: count }, (_, n) => n * chunkSeconds);
}

export function chunkRange(plan: ChunkPlan, index: number): ChunkRange {
  const start = plan.starts[index];
  if (start === undefined) throw new Error(`chunk ${index} is not in the plan (${plan.starts.length} chunks)`);
  return { start, seconds: index === plan.starts.length - 1 ? null : plan.chunkSeconds };
}

export const chunksDir = (videoDir: string) => path.join(videoDir, CHUNKS_DIR);
export const chunkFile = (videoDir: string, index: number) => path.join(chunksDir(videoDir), `${index}.mp4`);

export async function readPlan(videoDir: string): Promise<ChunkPlan | null> {
  try {
    return JSON.parse(await readFile(path.join(chunksDir(videoDir), PLAN_FILE), 'utf8')) as ChunkPlan;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Record `plan`; chunks of an earlier plan with other settings or boundaries are removed first.
 * Returns whether an identical plan was already there (its chunks, and its preview, still hold).
 */
export async function writePlan(videoDir: string, plan: ChunkPlan): Promise<boolean> {
  const previous = await readPlan(videoDir).catch(() => null);
  const same = previous !== null && JSON.stringify(previous) === JSON.stringify(plan);
  if (!same) await rm(chunksDir(videoDir), { recursive: true, force: true });
  await mkdir(chunksDir(videoDir), { recursive: true, mode: 0o750 });
  await writeFileAtomic(path.join(chunksDir(videoDir), PLAN_FILE), `${JSON.stringify(plan)}\n`, `${PLAN_FILE}.tmp.${randomBytes(4).toString('hex')}`);
  return same;
}

/** One attempt at chunk n: ffmpeg writes the chunk (`file`) and its sheets into `dir`. */
export interface ChunkWork {
  dir: string;
  file: string;
}

const isSheet = (name: string) => name.startsWith('thumbs_') && name.endsWith('.jpg');
const SEALED_SUFFIX = '.sealed';

/** A work directory for chunk n's encode; those of earlier attempts that died are removed (plaintext, some of them). */
export async function chunkWorkDir(videoDir: string, index: number): Promise<ChunkWork> {
  const prefix = `${index}.tmp-`;
  const names = await readdir(chunksDir(videoDir));
  await Promise.all(names.filter((n) => n.startsWith(prefix)).map((n) => rm(path.join(chunksDir(videoDir), n), { recursive: true, force: true })));
  const dir = path.join(chunksDir(videoDir), `${prefix}${randomBytes(6).toString('hex')}`);
  await mkdir(dir, { mode: 0o750 });
  return { dir, file: path.join(dir, `${index}.mp4`) };
}

/** What seals a video's chunks: its data key and id; null in a vault without a KEK (chunks stay clear). */
export interface ChunkSeal {
  dataKey: Buffer;
  videoId: string;
}

/** Points of commitChunk after each durable step (the crash tests kill a transcoder there). */
export const CHUNK_COMMIT_STEPS = ['after-seal', 'after-sheets'] as const;
export type ChunkCommitStep = (typeof CHUNK_COMMIT_STEPS)[number];

/**
 * Make a finished chunk encode visible under its final names, durably: its sheets, then `<n>.mp4`
 * (present = complete, sheets included). With a seal, each file is first encrypted beside itself in
 * the work directory (fsynced) and its clear version removed, so nothing clear is renamed into
 * `.chunks/`. A crash before the chunk's rename leaves a work directory the chunk's retry removes
 * (and sheets it renames over); after it, at most the empty work directory.
 */
export async function commitChunk(work: ChunkWork, videoDir: string, index: number, seal: ChunkSeal | null, onStep?: (step: ChunkCommitStep) => void): Promise<void> {
  const dir = chunksDir(videoDir);
  /** The file `name` of the work directory made durable there, sealed when the video is encrypted: the path to rename. */
  const ready = async (name: string, sealInto: (clear: string, sealed: string, s: ChunkSeal) => Promise<unknown>) => {
    const clear = path.join(work.dir, name);
    if (!seal) {
      await fsyncFile(clear);
      return clear;
    }
    await sealInto(clear, `${clear}${SEALED_SUFFIX}`, seal);
    await rm(clear);
    return `${clear}${SEALED_SUFFIX}`;
  };
  const sheets: { from: string; name: string }[] = [];
  for (const name of (await readdir(work.dir)).filter(isSheet)) sheets.push({ from: await ready(name, sealSheet), name });
  const chunk = await ready(path.basename(work.file), sealChunk);
  onStep?.('after-seal');
  for (const { from, name } of sheets) await rename(from, path.join(dir, name));
  await fsyncDir(dir);
  onStep?.('after-sheets');
  await rename(chunk, chunkFile(videoDir, index));
  await fsyncDir(dir);
  await rm(work.dir, { recursive: true, force: true });
}

/** A chunk sealed under the video's key for chunks; `target` created and fsynced. */
const sealChunk = (file: string, target: string, { dataKey, videoId }: ChunkSeal) => encryptFile(file, target, deriveKey(dataKey, 'chunk'), videoId);
/** A chunk's sheet sealed as the publish seals images (so the join's copies of it are final). */
const sealSheet = (file: string, target: string, { dataKey, videoId }: ChunkSeal) => sealImage(file, target, videoId, dataKey);

/**
 * A chunk must cover its range before it is committed: ffmpeg ends without an
 * error at a truncated or unreadable stretch of the original, and a short chunk
 * would shift every chunk after it. The last chunk (to the end) need only hold video.
 */
export async function checkChunkCovers(file: string, range: ChunkRange, fps: number | null): Promise<void> {
  const covered = await probe(file).then(
    (p) => p.duration,
    () => 0,
  );
  const tolerance = 2 / (fps ?? 25);
  const short = range.seconds === null ? covered <= 0 : covered < range.seconds - tolerance;
  if (short) throw new UnprocessableError(`the chunk at ${range.start} s came out ${covered} s long instead of ${range.seconds ?? 'to the end'}`, 'chunk_incomplete');
}

export async function chunkDone(videoDir: string, index: number): Promise<boolean> {
  return exists(chunkFile(videoDir, index));
}

/** Indexes of the plan's chunks not on disk yet. */
export async function missingChunks(videoDir: string, plan: ChunkPlan): Promise<number[]> {
  const present = new Set(await readdir(chunksDir(videoDir)).catch(() => [] as string[]));
  return plan.starts.map((_, n) => n).filter((n) => !present.has(`${n}.mp4`));
}

/**
 * The concat demuxer's list: every chunk (`sources`: what ffmpeg reads for each, its path or the
 * loopback URL of a sealed one's plaintext) with its exact duration, so chunk n's timestamps start
 * at its planned second.
 */
export async function writeConcatList(plan: ChunkPlan, sources: string[], file: string): Promise<void> {
  const lines = ['ffconcat version 1.0'];
  plan.starts.forEach((_, n) => {
    lines.push(`file '${sources[n]!.replace(/'/g, "'\\''")}'`);
    const { seconds } = chunkRange(plan, n);
    if (seconds !== null) lines.push(`duration ${seconds.toFixed(6)}`);
  });
  // Read by the join's ffmpeg only: a loopback URL in it is a capability while the join runs.
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
}

/**
 * The chunks' thumbnail sheets into the join's work directory (copies: the chunks stay until the
 * publish is recorded). Sealed ones are already as the publish seals images, and stay so.
 */
export async function copyChunkThumbnails(videoDir: string, workDir: string): Promise<void> {
  const sheets = (await readdir(chunksDir(videoDir))).filter(isSheet);
  await Promise.all(sheets.map((n) => copyFile(path.join(chunksDir(videoDir), n), path.join(workDir, n))));
}

/** The committed files of `.chunks/` that are sealed, as paths within the video folder, with their key's purpose (the scrub checks their tags). */
export async function sealedChunkFiles(videoDir: string): Promise<{ file: string; purpose: 'chunk' | 'image' }[]> {
  const names = await readdir(chunksDir(videoDir)).catch(() => [] as string[]);
  const found: { file: string; purpose: 'chunk' | 'image' }[] = [];
  for (const name of names) {
    const purpose = /^\d+\.mp4$/.test(name) ? 'chunk' : isSheet(name) ? 'image' : null;
    if (purpose && (await isEncryptedFile(path.join(chunksDir(videoDir), name)))) found.push({ file: path.join(CHUNKS_DIR, name), purpose });
  }
  return found;
}

export async function removeChunks(videoDir: string): Promise<void> {
  await rm(chunksDir(videoDir), { recursive: true, force: true });
}

/**
 * Progress of a fanned-out video as one number: each chunk's own fraction in a
 * Redis hash, weighted by its length; the caller keeps meta.json's value
 * monotonic (a retried chunk starts again from 0 here).
 */
const progressKey = (videoId: string) => `pulsevault:transcode:chunk-progress:${videoId}`;
const PROGRESS_TTL_SECONDS = 7 * 24 * 3600;

export async function recordChunkProgress(redis: Redis, videoId: string, plan: ChunkPlan, index: number, fraction: number, probed: Pick<ProbeResult, 'duration'>): Promise<number> {
  const key = progressKey(videoId);
  await redis.multi().hset(key, String(index), String(Math.min(1, Math.max(0, fraction)))).expire(key, PROGRESS_TTL_SECONDS).exec();
  const fractions = await redis.hgetall(key);
  let doneSeconds = 0;
  plan.starts.forEach((start, n) => {
    const { seconds } = chunkRange(plan, n);
    doneSeconds += Number(fractions[String(n)] ?? 0) * (seconds ?? Math.max(0, probed.duration - start));
  });
  return probed.duration > 0 ? doneSeconds / probed.duration : 0;
}

export async function clearChunkProgress(redis: Redis, videoId: string): Promise<void> {
  await redis.del(progressKey(videoId));
}
