/**
 * One transcode job, end to end: lease the video, probe the original, encode
 * the ladder in one ffmpeg run into a work directory, write the playlists and
 * a poster, publish atomically, and move meta.json through
 * `transcoding (progress) → transcoded`, auditing each step.
 *
 * Idempotent: a video already transcoded (status and outputs on disk) is not
 * redone; a delivery while another transcoder holds the lease is refused with
 * 409 `transcode_in_progress` (the connector waits and asks again).
 * Failures are left to the connector to turn into `queued` (retry) or `failed`.
 */
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import type { Config } from '../platform/config.js';
import { AppError, ConflictError, UnprocessableError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import type { Logger } from '../platform/log.js';
import type { MediaStore } from '../video/store.js';
import { counter, histogram } from '../platform/metrics.js';
import { probe } from '../video/probe.js';
import { markProgress, markTranscoded, markTranscoding } from '../video/state.js';
import type { Redis } from '../platform/redis.js';
import type { TranscodeJob } from './queue.js';
import { buildEncodeCommand, buildPosterCommand, ENCODERS, encodeOptionsFor, MANIFEST_NAME } from './ffmpeg-command.js';
import { FfmpegError, listEncoders, runFfmpeg } from './ffmpeg-run.js';
import type { VideoCodecFamily } from './ladder.js';
import { acquireLease } from './lease.js';
import { MASTER_NAME, writePlaylists } from './playlists.js';
import { createWorkDir, publishDir, removeLeftovers } from './publish.js';

/** Published directory (the spec's layout: hls/master.m3u8 …; the DASH manifest sits beside it over the same segments). */
export const OUTPUT_DIR = 'hls';
export const POSTER_NAME = 'poster.jpg';
/** How often meta.json's progress is refreshed at most (the issue asks for at least every 5 s). */
const PROGRESS_WRITE_MS = 2_000;

export interface TranscoderDeps {
  config: Config;
  redis: Redis;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
}

export type TranscodeResult = { outcome: 'transcoded'; renditions: string[]; seconds: number } | { outcome: 'already_transcoded' };

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

export async function transcodeVideo(deps: TranscoderDeps, codecs: VideoCodecFamily[], job: TranscodeJob, requestId: string | null = null): Promise<TranscodeResult> {
  const { config, redis, store, audit, log } = deps;
  const { videoId } = job;
  const videoDir = store.dir(videoId);
  const meta = await store.read(videoId);
  if (meta.status === 'transcoded' && (await exists(path.join(videoDir, OUTPUT_DIR, MASTER_NAME)))) {
    transcodes().inc({ status: 'skipped' });
    return { outcome: 'already_transcoded' };
  }
  const lease = await acquireLease(redis, videoId, config.transcode.leaseSeconds * 1000);
  if (!lease) throw new ConflictError('another transcoder is working on this video', 'transcode_in_progress');

  const started = Date.now();
  const record = (action: string, outcome: 'success' | 'failure', reason: string | null = null) =>
    audit.record({ category: 'transcode', action, outcome, reason, videoId, requestId });
  let workDir: string | null = null;
  try {
    const cleaned = await removeLeftovers(videoDir);
    if (cleaned > 0) log.info({ videoId, cleaned }, 'removed leftovers of an interrupted transcode');
    await markTranscoding(store, videoId, job.attempt);
    await record('transcode.start', 'success');

    const source = path.join(videoDir, meta.original);
    const probed = await probe(source).catch((err: unknown) => {
      throw err instanceof AppError ? new UnprocessableError(err.message, 'unreadable_original') : err;
    });
    workDir = await createWorkDir(videoDir);
    const encode = encodeOptionsFor(config, probed, codecs, source, workDir);
    const { rungs } = encode;
    const { args, streams } = buildEncodeCommand(encode);

    let lastWrite = Date.now();
    let writing: Promise<unknown> = Promise.resolve();
    const signal = AbortSignal.any([lease.lost, AbortSignal.timeout(encodeBudgetMs(config))]);
    await runFfmpeg(args, {
      signal,
      onProgress: ({ outTimeSeconds }) => {
        if (Date.now() - lastWrite < PROGRESS_WRITE_MS) return;
        lastWrite = Date.now();
        // Encoding is ~all of the work; 99 % until the outputs are published.
        const progress = Math.min(99, Math.floor((outTimeSeconds / probed.duration) * 100));
        writing = writing.then(() => markProgress(store, videoId, progress)).catch((err: unknown) => log.warn({ videoId, err }, 'progress update failed'));
      },
    }).catch((err: unknown) => {
      if (err instanceof FfmpegError && err.reason === 'aborted') {
        throw new FfmpegError(lease.lost.aborted ? 'lease_lost' : 'timeout', lease.lost.aborted ? 'the lease was lost' : `transcode exceeded ${encodeBudgetMs(config) / 1000} s`);
      }
      throw err;
    });
    await writing;

    const top = rungs[rungs.length - 1]!;
    await runFfmpeg(buildPosterCommand(source, path.join(workDir, POSTER_NAME), Math.min(probed.duration / 2, 2), top));
    await writePlaylists(workDir, streams, probed.fps);
    await publishDir(workDir, videoDir, OUTPUT_DIR);
    workDir = null;

    const { meta: done } = await markTranscoded(store, videoId, {
      ladder: rungs.map((r) => ({ name: r.name, width: r.width, height: r.height, kbps: r.kbps })),
      codecs,
      outputs: { hlsMaster: `${OUTPUT_DIR}/${MASTER_NAME}`, dashManifest: `${OUTPUT_DIR}/${MANIFEST_NAME}`, poster: `${OUTPUT_DIR}/${POSTER_NAME}` },
    });
    const { renditions } = done;
    await record('transcode.complete', 'success');
    const seconds = (Date.now() - started) / 1000;
    transcodes().inc({ status: 'success' });
    duration().observe({ ladder: top.name }, seconds);
    log.info({ videoId, renditions, seconds, attempt: job.attempt }, 'transcoded');
    return { outcome: 'transcoded', renditions, seconds };
  } catch (err) {
    transcodes().inc({ status: 'failure' });
    const reason = err instanceof AppError ? err.code : 'internal';
    log.warn({ videoId, attempt: job.attempt, reason, err: err instanceof AppError ? err.message : err }, 'transcode failed');
    await record('transcode.error', 'failure', reason).catch(() => undefined);
    throw err;
  } finally {
    if (workDir) await removeLeftovers(videoDir).catch(() => undefined);
    await lease.release();
  }
}
