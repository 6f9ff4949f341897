/**
 * One transcode job, end to end, by what it is: the whole video (lease it,
 * probe the original, encode the ladder in one ffmpeg run into a work directory),
 * its fan-out (a video longer than one chunk: plan the chunks, fanout.ts, and
 * queue the parts — preview, chunks, join — which come back here one by one), a
 * chunk, the preview, or the join (the chunks into the ladder). The whole video
 * and the join end alike (publishLadder): playlists and a poster, an atomic
 * publish, meta.json `transcoding (progress) → transcoded`, each step audited.
 *
 * Idempotent: a video already transcoded (status and outputs on disk) is not
 * redone; a delivery while another transcoder holds the lease is refused with
 * 409 `transcode_in_progress` (the connector waits and asks again).
 * Failures are answered with their code; what they mean — retry, `failed`, or for
 * a full disk (507 `no_space`) waiting without spending an attempt — is job.ts's.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import type { AuditActionOf } from '../audit/actions.js';
import type { Config } from '../platform/config.js';
import { PlaintextSources } from '../crypto/loopback.js';
import { AppError, ConflictError, UnprocessableError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import type { Logger } from '../platform/log.js';
import type { MediaStore, VideoMeta } from '../video/store.js';
import { counter, histogram } from '../platform/metrics.js';
import { probe, type ProbeResult } from '../video/probe.js';
import { markPreviewReady, markProgress, markTranscoded, markTranscoding } from '../video/state.js';
import type { Redis } from '../platform/redis.js';
import { enqueueFanOut, enqueueJoin } from './job.js';
import type { TranscodeJob } from './queue.js';
import { buildChunkCommand, buildEncodeCommand, buildJoinCommand, buildPosterCommand, ENCODERS, encodeOptionsFor, MANIFEST_NAME, SEGMENT_SECONDS, type EncodeOptions } from './ffmpeg-command.js';
import { encryptRenditions } from './encrypt-renditions.js';
import { CencError } from '../crypto/cenc.js';
import { sealImages } from '../crypto/images.js';
import { renditionKey } from '../keys/video-keys.js';
import { thumbnailOutput, THUMBNAIL_INDEX, writeThumbnailIndex, type ThumbnailRange } from './thumbnails.js';
import {
  checkChunkCovers,
  copyChunkThumbnails,
  chunkDone,
  chunkFile,
  chunkRange,
  chunksDir,
  chunkWorkDir,
  clearChunkProgress,
  commitChunk,
  missingChunks,
  planChunks,
  readPlan,
  recordChunkProgress,
  removeChunks,
  writeConcatList,
  writePlan,
  type ChunkCommitStep,
  type ChunkPlan,
  type ChunkWork,
} from './fanout.js';
import { FfmpegError, listEncoders, NO_SPACE_REASON, runFfmpeg } from './ffmpeg-run.js';
import type { VideoCodecFamily } from './ladder.js';
import { acquireLease, type Lease } from './lease.js';
import { MASTER_NAME, writePlaylists } from './playlists.js';
import { createWorkDir, publishDir, removeLeftovers } from './publish.js';

/** Published directory (the spec's layout: hls/master.m3u8 …; the DASH manifest sits beside it over the same segments). */
export const OUTPUT_DIR = 'hls';
/** A fanned-out video's early rendition, the same layout with the lowest rung only; kept after the join for players still on it. */
export const PREVIEW_DIR = 'preview';
export const POSTER_NAME = 'poster.jpg';
/** How often meta.json's progress is refreshed at most (the issue asks for at least every 5 s). */
const PROGRESS_WRITE_MS = 2_000;

export interface TranscoderDeps {
  config: Config;
  redis: Redis;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
  /** The crash tests' seam (test/helpers/crashing-chunk.mjs); production sets nothing. */
  onStep?: (step: ChunkCommitStep) => void;
}

export type TranscodeResult =
  | { outcome: 'transcoded'; renditions: string[]; seconds: number }
  | { outcome: 'already_transcoded' }
  | { outcome: 'fanned_out'; chunks: number }
  | { outcome: 'chunk_transcoded'; chunk: number }
  | { outcome: 'preview_published'; rendition: string }
  | { outcome: 'skipped'; reason: 'video_failed' | 'video_deleted' };

const transcodes = () =>
  counter({ name: 'pulsevault_transcodes_total', help: 'Transcode attempts by outcome (success, failure, skipped = already transcoded).', labelNames: ['status'] as const });
const duration = () =>
  histogram({
    name: 'pulsevault_transcode_duration_seconds',
    help: 'Wall time of successful transcodes, by ladder (top rendition).',
    labelNames: ['ladder'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600],
  });

/** The codec families configured, checked against this ffmpeg's encoders (start-up). */
export async function checkEncoders(config: Config): Promise<VideoCodecFamily[]> {
  const families: VideoCodecFamily[] = ['h264', ...(config.transcode.enableHevc ? (['hevc'] as const) : []), ...(config.transcode.enableAv1 ? (['av1'] as const) : [])];
  const available = await listEncoders();
  const needed = [...families.map((f) => ENCODERS[f]), 'aac'];
  const missing = needed.filter((e) => !available.has(e));
  if (missing.length > 0) {
    throw new Error(`this ffmpeg lacks the encoder(s) ${missing.join(', ')} (needed by ${families.join(', ')}); install an ffmpeg built with them or unset ENABLE_HEVC/ENABLE_AV1`);
  }
  return families;
}

/** The transcode budget: TRANSCODE_TIMEOUT_SECONDS less a margin to fail cleanly before the watchdog's exec_timeout. */
export function encodeBudgetMs(config: Config): number {
  const total = config.transcode.timeoutSeconds;
  return (total - Math.min(60, Math.ceil(total / 10))) * 1000;
}

/** Run an encode under the lease and the time budget, reporting the fraction of `seconds` written (throttled). */
async function runEncode(config: Config, args: string[], lease: Lease, seconds: number, onFraction: (fraction: number) => Promise<unknown>, log: Logger): Promise<void> {
  let lastWrite = Date.now();
  let writing: Promise<unknown> = Promise.resolve();
  const signal = AbortSignal.any([lease.lost, AbortSignal.timeout(encodeBudgetMs(config))]);
  await runFfmpeg(args, {
    signal,
    onProgress: ({ outTimeSeconds }) => {
      if (Date.now() - lastWrite < PROGRESS_WRITE_MS) return;
      lastWrite = Date.now();
      const fraction = seconds > 0 ? Math.min(1, outTimeSeconds / seconds) : 0;
      writing = writing.then(() => onFraction(fraction)).catch((err: unknown) => log.warn({ err }, 'progress update failed'));
    },
  }).catch((err: unknown) => {
    if (err instanceof FfmpegError && err.reason === 'aborted') {
      throw new FfmpegError(lease.lost.aborted ? 'lease_lost' : 'timeout', lease.lost.aborted ? 'the lease was lost' : `transcode exceeded ${encodeBudgetMs(config) / 1000} s`);
    }
    throw err;
  });
  await writing;
}

async function probeOriginal(source: string): Promise<ProbeResult> {
  return probe(source).catch((err: unknown) => {
    throw err instanceof AppError ? new UnprocessableError(err.message, 'unreadable_original') : err;
  });
}

/** The lease on `key` (the video, one of its chunks, its preview), or 409 `transcode_in_progress` while another transcoder holds it. */
async function takeLease({ config, redis }: TranscoderDeps, key: string, what: string): Promise<Lease> {
  const lease = await acquireLease(redis, key, config.transcode.leaseSeconds * 1000);
  if (!lease) throw new ConflictError(`another transcoder is working on this ${what}`, 'transcode_in_progress');
  return lease;
}

/** Records a step of the video's transcode in the audit log. */
function transcodeRecorder(audit: AuditLog, videoId: string, requestId: string | null) {
  return (action: AuditActionOf<'transcode'>, outcome: 'success' | 'failure', reason: string | null = null) =>
    audit.record({ category: 'transcode', action, outcome, reason, videoId, requestId });
}

/**
 * A full disk — ENOSPC from the file system (work directory, playlists, publish), as ffmpeg's own
 * is already — becomes 507 `no_space`, so the queue waits for space instead of spending attempts.
 */
function asTranscodeFailure(err: unknown): unknown {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOSPC' ? new FfmpegError(NO_SPACE_REASON, `the media volume is full: ${(err as Error).message}`) : err;
}

/** A disposed-of video's job is acked (200) and does nothing (shared/lifecycle/dispose.ts). */
const DELETED: TranscodeResult = { outcome: 'skipped', reason: 'video_deleted' };
const isDeletedVideo = async (store: MediaStore, videoId: string) => (await store.read(videoId).catch(() => null))?.status === 'deleted';
async function unpublish(videoDir: string, name: string): Promise<TranscodeResult> {
  await rm(path.join(videoDir, name), { recursive: true, force: true });
  return DELETED;
}

const isTranscoded = async (store: MediaStore, videoId: string, meta: VideoMeta) =>
  meta.status === 'transcoded' && (await exists(path.join(store.dir(videoId), OUTPUT_DIR, MASTER_NAME)));

/** A job for a whole video, one of its chunks, its preview, or its join (shared/transcode/fanout.ts). */
export async function transcodeVideo(deps: TranscoderDeps, codecs: VideoCodecFamily[], job: TranscodeJob, requestId: string | null = null): Promise<TranscodeResult> {
  switch (job.part?.kind) {
    case 'chunk':
      return transcodeChunk(deps, job, job.part.index, requestId);
    case 'preview':
      return transcodePreview(deps, job, requestId);
    case 'join':
      return underVideoLease(deps, job, requestId, (step) => joinChunks(deps, job, step));
    case undefined:
      return underVideoLease(deps, job, requestId, (step) => transcodeWhole(deps, codecs, job, step));
  }
}

/** What the whole-video and join steps run with: the video as read, its directory and original, and its audit. */
interface VideoStep {
  meta: VideoMeta;
  videoDir: string;
  /** What ffmpeg reads the original from: its path, or a loopback URL of `sources` (../crypto/loopback.ts), which serves the join's sealed chunks too. */
  source: string;
  sources: PlaintextSources;
  lease: Lease;
  record: ReturnType<typeof transcodeRecorder>;
  /** Set while a work directory exists: removed if the step does not publish it. */
  workDir: string | null;
}

/**
 * The frame of a job that publishes the ladder (the whole video, or its join): nothing to do for a
 * deleted or already transcoded video; the video's lease; leftovers of an interrupted run removed;
 * a failure counted, audited and answered with its code (507 `no_space` for a full disk).
 */
async function underVideoLease(deps: TranscoderDeps, job: TranscodeJob, requestId: string | null, body: (step: VideoStep) => Promise<TranscodeResult>): Promise<TranscodeResult> {
  const { store, audit, log } = deps;
  const { videoId } = job;
  const videoDir = store.dir(videoId);
  const meta = await store.read(videoId);
  if (meta.status === 'deleted') return DELETED;
  if (await isTranscoded(store, videoId, meta)) {
    transcodes().inc({ status: 'skipped' });
    return { outcome: 'already_transcoded' };
  }
  // A chunk was dead-lettered (the video failed) after this join was queued: nothing may be published.
  if (job.part?.kind === 'join' && meta.status === 'failed') return { outcome: 'skipped', reason: 'video_failed' };
  const lease = await takeLease(deps, videoId, 'video');
  const record = transcodeRecorder(audit, videoId, requestId);
  const sources = new PlaintextSources(store.keys, videoId);
  let step: VideoStep | null = null;
  try {
    const cleaned = await removeLeftovers(videoDir);
    if (cleaned > 0) log.info({ videoId, cleaned }, 'removed leftovers of an interrupted transcode');
    const source = await sources.source(path.join(videoDir, meta.original), 'original');
    step = { meta, videoDir, source, sources, lease, record, workDir: null };
    return await body(step);
  } catch (thrown) {
    // A disposal revoked the lease (ffmpeg aborted): nothing to retry.
    if (await isDeletedVideo(store, videoId)) return DELETED;
    const err = asTranscodeFailure(thrown);
    transcodes().inc({ status: 'failure' });
    const reason = err instanceof AppError ? err.code : 'internal';
    log.warn({ videoId, attempt: job.attempt, reason, err: err instanceof AppError ? err.message : err }, 'transcode failed');
    await record('transcode.error', 'failure', reason).catch(() => undefined);
    throw err;
  } finally {
    if (step?.workDir) await removeLeftovers(videoDir).catch(() => undefined);
    await sources.close();
    await lease.release();
  }
}

/** The whole video in one encode — or, longer than one chunk, its fan-out instead. */
async function transcodeWhole(deps: TranscoderDeps, codecs: VideoCodecFamily[], job: TranscodeJob, step: VideoStep): Promise<TranscodeResult> {
  const { config, store } = deps;
  const { videoId } = job;
  const started = Date.now();
  await markTranscoding(store, videoId, job.attempt);
  await step.record('transcode.start', 'success');
  const probed = await probeOriginal(step.source);
  const starts = planChunks(probed.duration, config.transcode.chunkSegments);
  if (starts) return fanOut(deps, codecs, job, step, probed, starts);

  const workDir = (step.workDir = await createWorkDir(step.videoDir));
  const settings = encodeOptionsFor(config, probed, codecs, step.source, workDir);
  const top = settings.rungs.at(-1)!;
  const whole: ThumbnailRange = { index: 0, start: 0, seconds: probed.duration };
  const encode = { ...settings, thumbnails: thumbnailOutput(top, whole, workDir) };
  const { args, streams } = buildEncodeCommand(encode);
  // Encoding is ~all of the work; 99 % until the outputs are published.
  await runEncode(config, args, step.lease, probed.duration, (f) => markProgress(store, videoId, Math.min(99, Math.floor(f * 100))), deps.log);
  await writeThumbnailIndex(workDir, top, [whole]);
  return publishLadder(deps, job, step, { probed, settings, streams, started, plan: null });
}

/**
 * Plan the chunks on disk and queue the parts (preview, the chunks not done yet — or the join
 * straight away), which come back to this transcoder one by one.
 */
async function fanOut(deps: TranscoderDeps, codecs: VideoCodecFamily[], job: TranscodeJob, step: VideoStep, probed: ProbeResult, starts: number[]): Promise<TranscodeResult> {
  const { config, redis, log } = deps;
  const { videoId } = job;
  const { source: _s, outDir: _o, ...settings } = encodeOptionsFor(config, probed, codecs, step.source, step.videoDir);
  const plan: ChunkPlan = { chunkSeconds: config.transcode.chunkSegments * SEGMENT_SECONDS, starts, settings };
  // A re-plan of the same plan (a requeue, a recovery) keeps the chunks done and the preview a player may be on.
  if (!(await writePlan(step.videoDir, plan))) await rm(path.join(step.videoDir, PREVIEW_DIR), { recursive: true, force: true });
  await clearChunkProgress(redis, videoId);
  // Chunks kept from an earlier plan with the same settings are not redone.
  const missing = await missingChunks(step.videoDir, plan);
  for (const index of starts.keys()) if (!missing.includes(index)) await recordChunkProgress(redis, videoId, plan, index, 1, probed);
  await enqueueFanOut(redis, job, missing);
  await step.record('transcode.fanout', 'success');
  log.info({ videoId, chunks: starts.length, toEncode: missing.length, chunkSeconds: plan.chunkSeconds }, 'transcode fanned out');
  return { outcome: 'fanned_out', chunks: starts.length };
}

/** Every chunk on disk: copy them into the ladder's layout with the audio encoded once, and publish. */
async function joinChunks(deps: TranscoderDeps, job: TranscodeJob, step: VideoStep): Promise<TranscodeResult> {
  const { config, log } = deps;
  const { videoDir } = step;
  const started = Date.now();
  const probed = await probeOriginal(step.source);
  const plan = await readPlan(videoDir);
  if (!plan) throw new UnprocessableError('the video has no chunk plan to join', 'no_chunk_plan');
  const missing = await missingChunks(videoDir, plan);
  if (missing.length > 0) throw new UnprocessableError(`chunks ${missing.join(', ')} are missing`, 'chunks_missing');
  await step.record('transcode.join', 'success');

  const workDir = (step.workDir = await createWorkDir(videoDir));
  const encode = { ...plan.settings, source: step.source, outDir: workDir };
  const { streams } = buildEncodeCommand(encode);
  const list = path.join(workDir, 'chunks.ffconcat');
  // Sealed chunks are read as their plaintext over the original's loopback server: none is written to disk.
  await writeConcatList(plan, await Promise.all(plan.starts.map((_, n) => step.sources.source(chunkFile(videoDir, n), 'chunk'))), list);
  await runEncode(config, buildJoinCommand(encode, list, streams), step.lease, probed.duration, async () => undefined, log);
  await rm(list);
  await copyChunkThumbnails(videoDir, workDir);
  const top = plan.settings.rungs.at(-1)!;
  await writeThumbnailIndex(workDir, top, plan.starts.map((start, index) => ({ index, start, seconds: chunkRange(plan, index).seconds ?? probed.duration - start })));
  return publishLadder(deps, job, step, { probed, settings: encode, streams, started, plan });
}

interface Encoded {
  probed: ProbeResult;
  settings: EncodeOptions;
  streams: ReturnType<typeof buildEncodeCommand>['streams'];
  started: number;
  /** The joined plan, whose chunks go once the publish is recorded; null for a whole-video encode. */
  plan: ChunkPlan | null;
}

/** Poster and playlists into the work directory, publish it atomically as `hls/`, and record it in meta.json and the audit. */
async function publishLadder(deps: TranscoderDeps, job: TranscodeJob, step: VideoStep, { probed, settings, streams, started, plan }: Encoded): Promise<TranscodeResult> {
  const { redis, store, log } = deps;
  const { videoId } = job;
  const { videoDir } = step;
  const workDir = step.workDir!;
  const { rungs } = settings;
  const top = rungs[rungs.length - 1]!;
  await runFfmpeg(buildPosterCommand(step.source, path.join(workDir, POSTER_NAME), Math.min(probed.duration / 2, 2), top));
  await writePlaylists(workDir, streams, probed.fps);
  await encryptIfKeyed(store, videoId, workDir);
  await publishDir(workDir, videoDir, OUTPUT_DIR);
  step.workDir = null;

  const { meta: done } = await markTranscoded(store, videoId, {
    ladder: rungs.map((r) => ({ name: r.name, width: r.width, height: r.height, kbps: r.kbps })),
    codecs: settings.codecs,
    outputs: {
      hlsMaster: `${OUTPUT_DIR}/${MASTER_NAME}`,
      dashManifest: `${OUTPUT_DIR}/${MANIFEST_NAME}`,
      poster: `${OUTPUT_DIR}/${POSTER_NAME}`,
      thumbnails: `${OUTPUT_DIR}/${THUMBNAIL_INDEX}`,
    },
  });
  // Deleted while encoding, before its lease was revoked: what was just published goes too.
  if (done.status === 'deleted') return await unpublish(videoDir, OUTPUT_DIR);
  const { renditions } = done;
  // Only once published and recorded: a crash before this leaves the chunks for the join's retry.
  if (plan) {
    await removeChunks(videoDir);
    await clearChunkProgress(redis, videoId);
  }
  await step.record('transcode.complete', 'success');
  const seconds = (Date.now() - started) / 1000;
  transcodes().inc({ status: 'success' });
  duration().observe({ ladder: top.name }, seconds);
  log.info({ videoId, renditions, seconds, attempt: job.attempt, joined: plan?.starts.length ?? 0 }, 'transcoded');
  return { outcome: 'transcoded', renditions, seconds };
}

/**
 * A video with a data key gets encrypted renditions and sealed images (poster, sprite sheets); one
 * stored in the clear keeps clear ones (as before encryption at rest).
 */
async function encryptIfKeyed(store: MediaStore, videoId: string, workDir: string): Promise<void> {
  const dataKey = await store.keys?.dataKey(videoId);
  if (!dataKey) return;
  try {
    await encryptRenditions(workDir, videoId, renditionKey(dataKey));
  } catch (err) {
    // Not passing: the same encode would be refused again (an AV1 ladder, docs/transcoding.md).
    throw err instanceof CencError ? new UnprocessableError(`the renditions cannot be encrypted: ${err.message}`, 'renditions_not_encryptable') : err;
  }
  await sealImages(workDir, videoId, dataKey);
}

/** What a part of a fanned-out video starts from, or its answer when nothing is left to do (published, or failed). */
async function loadPart(store: MediaStore, videoId: string): Promise<{ done: TranscodeResult } | { meta: VideoMeta; videoDir: string; plan: ChunkPlan }> {
  const videoDir = store.dir(videoId);
  const meta = await store.read(videoId);
  if (await isTranscoded(store, videoId, meta)) return { done: { outcome: 'already_transcoded' } };
  if (meta.status === 'failed') return { done: { outcome: 'skipped', reason: 'video_failed' } };
  if (meta.status === 'deleted') return { done: DELETED };
  const plan = await readPlan(videoDir);
  if (!plan) throw new UnprocessableError('the video has no chunk plan', 'no_chunk_plan');
  return { meta, videoDir, plan };
}

/**
 * One chunk of a fanned-out video, under the chunk's own lease (chunks of one
 * video run side by side on different replicas). A chunk already on disk is not
 * redone. Whoever finds the last chunk present enqueues the join (idempotent:
 * the join job is keyed by the video, and a redelivered chunk job asks again).
 */
async function transcodeChunk(deps: TranscoderDeps, job: TranscodeJob, index: number, requestId: string | null): Promise<TranscodeResult> {
  const { config, redis, store, audit, log } = deps;
  const { videoId } = job;
  const part = await loadPart(store, videoId);
  if ('done' in part) return part.done;
  const { meta, videoDir, plan } = part;
  const range = chunkRange(plan, index);
  const lease = await takeLease(deps, `${videoId}:chunk:${index}`, 'chunk');
  const record = transcodeRecorder(audit, videoId, requestId);
  let work: ChunkWork | null = null;
  const sources = new PlaintextSources(store.keys, videoId);
  try {
    if (!(await chunkDone(videoDir, index))) {
      const started = Date.now();
      await record('transcode.chunk.start', 'success');
      const source = await sources.source(path.join(videoDir, meta.original), 'original');
      const probed = await probeOriginal(source);
      work = await chunkWorkDir(videoDir, index);
      const chunkSeconds = range.seconds ?? probed.duration - range.start;
      const thumbnails = thumbnailOutput(plan.settings.rungs.at(-1)!, { index, start: range.start, seconds: chunkSeconds }, work.dir);
      const args = buildChunkCommand({ ...plan.settings, source, outDir: work.dir, thumbnails }, range.start, range.seconds, work.file);
      const report = async (fraction: number) => {
        const overall = await recordChunkProgress(redis, videoId, plan, index, fraction, probed);
        // The join and publish are the last percent.
        await markProgress(store, videoId, Math.min(99, Math.floor(overall * 99)));
      };
      await runEncode(config, args, lease, chunkSeconds, report, log);
      await checkChunkCovers(work.file, range, plan.settings.fps);
      // Sealed before it is committed: a chunk waits in the clear only while it is being encoded.
      const dataKey = (await store.keys?.dataKey(videoId)) ?? null;
      await commitChunk(work, videoDir, index, dataKey && { dataKey, videoId }, deps.onStep);
      work = null;
      await report(1);
      await record('transcode.chunk.complete', 'success');
      log.info({ videoId, chunk: index, of: plan.starts.length, seconds: (Date.now() - started) / 1000, attempt: job.attempt }, 'chunk transcoded');
    }
    if ((await missingChunks(videoDir, plan)).length === 0) await enqueueJoin(redis, job);
    return { outcome: 'chunk_transcoded', chunk: index };
  } catch (thrown) {
    const err = asTranscodeFailure(thrown);
    const reason = err instanceof AppError ? err.code : 'internal';
    log.warn({ videoId, chunk: index, attempt: job.attempt, reason, err: err instanceof AppError ? err.message : err }, 'chunk transcode failed');
    if (work) await rm(work.dir, { recursive: true, force: true }).catch(() => undefined);
    await record('transcode.error', 'failure', reason).catch(() => undefined);
    throw err;
  } finally {
    await sources.close();
    await lease.release();
  }
}

/**
 * The early rendition of a fanned-out video: its lowest rung and the audio, one
 * encode of the whole source with the ladder's own settings for that rung,
 * published atomically as `preview/` and announced in meta.json (/metadata).
 * It never holds up the ladder: its own lease, its work inside `.chunks/`; if the
 * join publishes first (and removes `.chunks/`), the preview has nothing left to do.
 */
async function transcodePreview(deps: TranscoderDeps, job: TranscodeJob, requestId: string | null): Promise<TranscodeResult> {
  const { config, store, audit, log } = deps;
  const { videoId } = job;
  const part = await loadPart(store, videoId);
  if ('done' in part) return part.done;
  const { meta, videoDir, plan } = part;
  const lowest = plan.settings.rungs[0]!;
  const lease = await takeLease(deps, `${videoId}:preview`, 'preview');
  const preview = { rendition: lowest.name, hlsMaster: `${PREVIEW_DIR}/${MASTER_NAME}`, dashManifest: `${PREVIEW_DIR}/${MANIFEST_NAME}` };
  const workParent = chunksDir(videoDir);
  const sources = new PlaintextSources(store.keys, videoId);
  try {
    // A redelivery after the publish only announces it again.
    if (!(await exists(path.join(videoDir, preview.hlsMaster)))) {
      const started = Date.now();
      await removeLeftovers(workParent);
      const source = await sources.source(path.join(videoDir, meta.original), 'original');
      const probed = await probeOriginal(source);
      const workDir = await createWorkDir(workParent);
      const { args, streams } = buildEncodeCommand({ ...plan.settings, rungs: [lowest], codecs: [plan.settings.codecs[0]!], source, outDir: workDir });
      await runEncode(config, args, lease, probed.duration, async () => undefined, log);
      await writePlaylists(workDir, streams, probed.fps);
      await encryptIfKeyed(store, videoId, workDir);
      await publishDir(workDir, videoDir, PREVIEW_DIR);
      log.info({ videoId, rendition: lowest.name, seconds: (Date.now() - started) / 1000 }, 'preview published');
    }
    const { meta: announced } = await markPreviewReady(store, videoId, preview);
    if (announced.status === 'deleted') return await unpublish(videoDir, PREVIEW_DIR);
    await transcodeRecorder(audit, videoId, requestId)('transcode.preview', 'success');
    return { outcome: 'preview_published', rendition: lowest.name };
  } catch (err) {
    if (await isDeletedVideo(store, videoId)) return DELETED;
    if (await isTranscoded(store, videoId, await store.read(videoId))) return { outcome: 'already_transcoded' };
    throw asTranscodeFailure(err);
  } finally {
    await removeLeftovers(workParent).catch(() => undefined);
    await sources.close();
    await lease.release();
  }
}
