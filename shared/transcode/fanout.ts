/**
 * Transcode fan-out: a video longer than one chunk (TRANSCODE_CHUNK_SEGMENTS ×
 * SEGMENT_SECONDS) is planned as time chunks on segment boundaries, each its own
 * queue job, so any free transcoder replica takes one; the chunk that completes
 * the set enqueues the join, which copies the chunks into the published layout.
 *
 * On disk, in the video directory (the source of truth, as meta.json):
 * - `.chunks/plan.json`: the plan (chunk length, count, encode settings). A
 *   re-plan with the same settings keeps the chunks already done.
 * - `.chunks/<n>.mp4`: chunk n, every rung as its own video track, no audio.
 *   Written under a temporary name, fsynced and renamed: present = complete.
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

/** A temporary name for chunk n's encode, removed by the next attempt at that chunk if this one dies. */
export async function chunkWorkFile(videoDir: string, index: number): Promise<string> {
  const prefix = `${index}.mp4.tmp-`;
  const names = await readdir(chunksDir(videoDir));
  await Promise.all(names.filter((n) => n.startsWith(prefix)).map((n) => rm(path.join(chunksDir(videoDir), n), { force: true })));
  return path.join(chunksDir(videoDir), `${prefix}${randomBytes(6).toString('hex')}.mp4`);
}

/** Make a finished chunk encode visible under its final name (durably: fsync, rename, fsync the directory). */
export async function commitChunk(workFile: string, videoDir: string, index: number): Promise<void> {
  await fsyncFile(workFile);
  await rename(workFile, chunkFile(videoDir, index));
  await fsyncDir(chunksDir(videoDir));
}

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

/** The concat demuxer's list: every chunk with its exact duration, so chunk n's timestamps start at its planned second. */
export async function writeConcatList(videoDir: string, plan: ChunkPlan, file: string): Promise<void> {
  const lines = ['ffconcat version 1.0'];
  plan.starts.forEach((_, n) => {
    lines.push(`file '${chunkFile(videoDir, n).replace(/'/g, "'\\''")}'`);
    const { seconds } = chunkRange(plan, n);
    if (seconds !== null) lines.push(`duration ${seconds.toFixed(6)}`);
  });
  await writeFile(file, `${lines.join('\n')}\n`);
}

/** The chunks' thumbnail sheets into the join's work directory (copies: the chunks stay until the publish is recorded). */
export async function copyChunkThumbnails(videoDir: string, workDir: string): Promise<void> {
  const sheets = (await readdir(chunksDir(videoDir))).filter((n) => n.startsWith('thumbs_') && n.endsWith('.jpg'));
  await Promise.all(sheets.map((n) => copyFile(path.join(chunksDir(videoDir), n), path.join(workDir, n))));
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
