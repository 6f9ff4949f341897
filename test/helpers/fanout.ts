/**
 * Drives a fanned-out transcode in-process the way the queue connector would:
 * the parts' jobs are read from the real Redis stream and handed to the real
 * transcoder, `replicas` at a time; and reads what it published, segment by segment.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import HLS from 'hls-parser';
import type { Redis } from '../../shared/platform/redis.js';
import type { VideoCodecFamily } from '../../shared/transcode/ladder.js';
import { TRANSCODE_STREAM, jobKey, transcodeJobSchema, type TranscodeJob } from '../../shared/transcode/queue.js';
import { transcodeVideo, type TranscodeResult, type TranscoderDeps } from '../../shared/transcode/transcoder.js';

const run = promisify(execFile);

/** The jobs in the stream for `videoId` that have not been run yet (by job key). */
async function queuedParts(redis: Redis, videoId: string, ran: Set<string>): Promise<TranscodeJob[]> {
  const entries = (await redis.xrange(TRANSCODE_STREAM, '-', '+')) as [string, string[]][];
  return entries
    .map(([, fields]) => transcodeJobSchema.parse(JSON.parse(fields[fields.indexOf('job') + 1]!)))
    .filter((job) => job.videoId === videoId && job.part && !ran.has(jobKey(job)));
}

/**
 * Run the whole-video job, then every part it (and its chunks) enqueue, `replicas` jobs at a time
 * (in queue order); `onPart` sees each part as it finishes. Returns each job's result by key.
 */
export async function runFannedOut(
  deps: TranscoderDeps,
  codecs: VideoCodecFamily[],
  job: TranscodeJob,
  replicas = 2,
  onPart: (part: TranscodeJob, result: TranscodeResult) => Promise<void> = async () => undefined,
): Promise<Map<string, TranscodeResult>> {
  const results = new Map<string, TranscodeResult>([[jobKey(job), await transcodeVideo(deps, codecs, job)]]);
  for (;;) {
    const batch = (await queuedParts(deps.redis, job.videoId, new Set(results.keys()))).slice(0, replicas);
    if (batch.length === 0) return results;
    await Promise.all(
      batch.map(async (part) => {
        const result = await transcodeVideo(deps, codecs, part);
        results.set(jobKey(part), result);
        await onPart(part, result);
      }),
    );
  }
}

export interface RungSegments {
  playlist: string;
  init: string;
  segments: { uri: string; duration: number }[];
}

/** A media playlist's init segment and segments (paths relative to `hlsDir`). */
export function rungSegments(hlsDir: string, playlist: string): RungSegments {
  const media = HLS.parse(readFileSync(path.join(hlsDir, playlist), 'utf8'));
  if (media.isMasterPlaylist) throw new Error(`${playlist} is a master playlist`);
  return { playlist, init: media.segments[0]!.map!.uri, segments: media.segments.map((s) => ({ uri: s.uri, duration: s.duration })) };
}

/** Init segment + segments as one fragmented MP4, as a player appends them to its buffer. */
export function joinRung(hlsDir: string, rung: RungSegments, out: string): string {
  writeFileSync(out, Buffer.concat([rung.init, ...rung.segments.map((s) => s.uri)].map((f) => readFileSync(path.join(hlsDir, f)))));
  return out;
}

/** baseMediaDecodeTime of the first track fragment of a segment (moof/traf/tfdt). */
export function tfdt(segment: Buffer): bigint {
  const find = (buf: Buffer, type: string): Buffer => {
    for (let at = 0; at + 8 <= buf.length; ) {
      const size = buf.readUInt32BE(at);
      if (buf.toString('latin1', at + 4, at + 8) === type) return buf.subarray(at + 8, at + size);
      if (size < 8) break;
      at += size;
    }
    throw new Error(`no ${type} box`);
  };
  const box = find(find(find(segment, 'moof'), 'traf'), 'tfdt');
  return box[0] === 1 ? box.readBigUInt64BE(4) : BigInt(box.readUInt32BE(4));
}

/** The track timescale of an init segment (moov/trak/mdia/mdhd). */
export function timescale(init: Buffer): number {
  const at = init.indexOf('mdhd', 0, 'latin1');
  if (at < 0) throw new Error('no mdhd box');
  const version = init[at + 4];
  return init.readUInt32BE(at + 4 + 4 + (version === 1 ? 16 : 8));
}

export interface Packet {
  pts: number;
  dts: number;
  keyframe: boolean;
}

/** Every packet of the first stream of `file`, in decode order (ffprobe). */
export async function packets(file: string): Promise<Packet[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', '0', '-show_entries', 'packet=pts_time,dts_time,flags', '-of', 'json', file], { maxBuffer: 64 * 1024 * 1024 });
  return (JSON.parse(stdout) as { packets: { pts_time: string; dts_time: string; flags: string }[] }).packets.map((p) => ({
    pts: Number(p.pts_time),
    dts: Number(p.dts_time),
    keyframe: p.flags.startsWith('K'),
  }));
}

/** Mean SSIM (ffmpeg's `All:`) of `file` against `reference` scaled to `width`x`height`. */
export async function ssim(file: string, reference: string, width: number, height: number): Promise<number> {
  const { stderr } = await run('ffmpeg', ['-hide_banner', '-nostdin', '-i', file, '-i', reference, '-lavfi', `[1:v]scale=${width}:${height}[ref];[0:v][ref]ssim`, '-f', 'null', '-']);
  const m = /SSIM .* All:([\d.]+)/.exec(stderr);
  if (!m) throw new Error(`no SSIM in ffmpeg's output: ${stderr.slice(-500)}`);
  return Number(m[1]);
}
