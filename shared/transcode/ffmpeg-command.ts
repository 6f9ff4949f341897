/**
 * The one ffmpeg command that transcodes a source into the whole ladder.
 *
 * One process decodes once, `split`s the picture per rung (and per codec), and
 * the `dash` muxer with `-hls_playlist 1` writes fMP4 (CMAF) segments that both
 * the DASH manifest and the HLS playlists point at. Trade-off (docs/transcoding.md
 * "One set of segments"): half the storage and one mux instead of two, and audio encoded
 * once as its own rendition; the price is HLS over fMP4 (HLS v7: iOS 10+,
 * Safari, hls.js, ExoPlayer — not pre-2016 set-top boxes that want MPEG-TS).
 *
 * Keyframes: forced every SEGMENT_SECONDS by timestamp on every rung, scene-cut
 * keyframes off and GOPs closed, so every segment of every rung starts with an
 * IDR at the same instant (equal segment boundaries, clean rung switches).
 */
import type { Config } from '../platform/config.js';
import type { ProbeResult } from '../video/probe.js';
import type { Rung, VideoCodecFamily } from './ladder.js';
import type { ThumbnailOutput } from './thumbnails.js';
import { AUDIO_KBPS, BUFSIZE_FACTOR, CODEC_BITRATE_FACTOR, MAXRATE_FACTOR, planLadder } from './ladder.js';

export const SEGMENT_SECONDS = 2;
export const MANIFEST_NAME = 'manifest.mpd';
/** What the dash muxer names its HLS media playlists (`media_<stream index>.m3u8`). */
export const ffmpegMediaPlaylist = (streamIndex: number) => `media_${streamIndex}.m3u8`;
export const FFMPEG_MASTER_NAME = 'ffmpeg-master.m3u8';
/** The init segment of a stream (the DASH Representation id is the stream index; the template is what ffmpeg is given). */
export const initSegmentName = (streamIndex: number | '$RepresentationID$') => `init_${streamIndex}.m4s`;

export interface EncodeOptions {
  source: string;
  /** Directory the manifest, playlists and segments are written to (must exist). */
  outDir: string;
  rungs: Rung[];
  codecs: VideoCodecFamily[];
  hasAudio: boolean;
  /** Frames per second of the source (for the GOP length); null when unknown. */
  fps: number | null;
  /** FFMPEG_PRESET: x264/x265 names; mapped to SVT-AV1's numbers. */
  preset: Config['transcode']['ffmpegPreset'];
  threads: number;
  /** Seek-thumbnail sprites as a second output of the same run (thumbnails.ts); none when absent. */
  thumbnails?: ThumbnailOutput;
}

/** Which output stream is which: the DASH Representation id is the stream index. */
export interface StreamPlan {
  video: { index: number; rung: Rung; codec: VideoCodecFamily }[];
  audio: { index: number } | null;
}

export interface EncodeCommand {
  args: string[];
  streams: StreamPlan;
}

/** Encoder (ffmpeg -encoders name) per codec family. */
export const ENCODERS: Record<VideoCodecFamily, string> = { h264: 'libx264', hevc: 'libx265', av1: 'libsvtav1' };

/**
 * FFMPEG_PRESET is an x264/x265 preset name; SVT-AV1 numbers its presets from
 * 0 (slowest) to 13. Each name maps to the SVT preset of about the same place
 * in its speed range (veryfast → 10), so one setting trades speed for quality
 * across the whole ladder.
 */
export const SVT_AV1_PRESETS: Record<EncodeOptions['preset'], number> = {
  ultrafast: 12,
  superfast: 11,
  veryfast: 10,
  faster: 9,
  fast: 8,
  medium: 7,
  slow: 6,
  slower: 5,
  veryslow: 4,
};

function codecArgs(codec: VideoCodecFamily, i: number, rung: Rung, o: EncodeOptions, gop: number): string[] {
  const kbps = Math.round(rung.kbps * CODEC_BITRATE_FACTOR[codec]);
  const rate = [`-b:v:${i}`, `${kbps}k`, `-maxrate:v:${i}`, `${Math.round(kbps * MAXRATE_FACTOR)}k`, `-bufsize:v:${i}`, `${kbps * BUFSIZE_FACTOR}k`];
  switch (codec) {
    case 'h264':
      return [`-c:v:${i}`, 'libx264', `-preset:v:${i}`, o.preset, `-profile:v:${i}`, 'high', ...rate];
    case 'hevc':
      // hvc1 (parameter sets in the init segment) is what Apple players require.
      return [`-c:v:${i}`, 'libx265', `-preset:v:${i}`, o.preset, `-tag:v:${i}`, 'hvc1', ...rate, `-x265-params:v:${i}`, `keyint=${gop}:min-keyint=${gop}:scenecut=0:open-gop=0:log-level=error`];
    case 'av1':
      return [`-c:v:${i}`, 'libsvtav1', `-preset:v:${i}`, String(SVT_AV1_PRESETS[o.preset]), ...rate];
  }
}

/** The encode options the transcoder uses for a probed source under `config` (the benchmark runs the same command by hand). */
export function encodeOptionsFor(config: Config, probed: ProbeResult, codecs: VideoCodecFamily[], source: string, outDir: string): EncodeOptions {
  return {
    source,
    outDir,
    rungs: planLadder(probed, config.transcode.renditions),
    codecs,
    hasAudio: probed.hasAudio,
    fps: probed.fps,
    preset: config.transcode.ffmpegPreset,
    threads: config.transcode.ffmpegThreads,
  };
}

/**
 * The video half of an encode: the split/scale graph, the maps and the per-stream
 * encoder settings, identical for a whole video and for a chunk of it; and the
 * thumbnail output (to go after the main one), fed by one more branch of the split.
 */
function videoEncodeArgs(o: EncodeOptions): { args: string[]; video: StreamPlan['video']; thumbnailArgs: string[] } {
  const gop = Math.max(1, Math.round((o.fps ?? 30) * SEGMENT_SECONDS));
  const branches = o.rungs.map((_, r) => `[s${r}]`).join('') + (o.thumbnails ? '[sthumbs]' : '');
  const filters: string[] = [`[0:v:0]split=${o.rungs.length + (o.thumbnails ? 1 : 0)}${branches}`];
  if (o.thumbnails) filters.push(`[sthumbs]${o.thumbnails.filter}[thumbs]`);
  const video: StreamPlan['video'] = [];
  const maps: string[] = [];
  const perStream: string[] = [];
  o.rungs.forEach((rung, r) => {
    const pads = o.codecs.map((c) => `[v${r}${c}]`);
    const scaled = `[s${r}]scale=${rung.width}:${rung.height},setsar=${rung.sar},format=yuv420p`;
    filters.push(o.codecs.length === 1 ? `${scaled}${pads[0]}` : `${scaled},split=${o.codecs.length}${pads.join('')}`);
  });
  // Stream order: codec by codec, rungs smallest first within each; audio last.
  for (const codec of o.codecs) {
    o.rungs.forEach((rung, r) => {
      const index = video.length;
      video.push({ index, rung, codec });
      maps.push('-map', `[v${r}${codec}]`);
      perStream.push(...codecArgs(codec, index, rung, o, gop));
    });
  }
  const args = [
    '-filter_complex', filters.join(';'),
    ...maps,
    // Source metadata (title, comment, location, device) may be PHI: none of it is copied.
    '-map_metadata', '-1', '-map_chapters', '-1',
    ...perStream,
    '-threads', String(o.threads),
    // Keyframes by timestamp: a chunk starts at a multiple of SEGMENT_SECONDS, so its forced keyframes fall where the whole video's would.
    '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0', '-flags', '+cgop',
    '-force_key_frames', `expr:gte(t,n_forced*${SEGMENT_SECONDS})`,
  ];
  return { args, video, thumbnailArgs: o.thumbnails ? ['-map', '[thumbs]', ...o.thumbnails.outputArgs] : [] };
}

const AUDIO_ARGS = ['-c:a', 'aac', '-b:a', `${AUDIO_KBPS}k`, '-ac', '2', '-ar', '48000'];

/** The dash muxer writing CMAF segments, the DASH manifest and HLS playlists into `outDir`. */
function dashOutputArgs(outDir: string, streams: StreamPlan, codecs: VideoCodecFamily[]): string[] {
  const adaptationSets = codecs.map((codec, c) => `id=${c},streams=${streams.video.filter((s) => s.codec === codec).map((s) => s.index).join(',')}`);
  if (streams.audio) adaptationSets.push(`id=${codecs.length},streams=${streams.audio.index}`);
  return [
    '-f', 'dash', '-dash_segment_type', 'mp4', '-seg_duration', String(SEGMENT_SECONDS),
    '-use_template', '1', '-use_timeline', '1',
    '-hls_playlist', '1', '-hls_master_name', FFMPEG_MASTER_NAME,
    '-adaptation_sets', adaptationSets.join(' '),
    '-init_seg_name', initSegmentName('$RepresentationID$'),
    '-media_seg_name', 'seg_$RepresentationID$_$Number%05d$.m4s',
    `${outDir}/${MANIFEST_NAME}`,
  ];
}

const COMMON_ARGS = ['-hide_banner', '-nostdin', '-loglevel', 'error', '-nostats', '-y', '-progress', 'pipe:1', '-stats_period', '1'];

export function buildEncodeCommand(o: EncodeOptions): EncodeCommand {
  const { args: videoArgs, video, thumbnailArgs } = videoEncodeArgs(o);
  const streams: StreamPlan = { video, audio: o.hasAudio ? { index: video.length } : null };
  const args = [
    ...COMMON_ARGS,
    '-i', o.source,
    ...videoArgs,
    ...(streams.audio ? ['-map', '0:a:0', ...AUDIO_ARGS] : []),
    ...dashOutputArgs(o.outDir, streams, o.codecs),
    ...thumbnailArgs,
  ];
  return { args, streams };
}

/**
 * One time chunk of a fanned-out transcode: every rung of [start, start + seconds)
 * (to the end when `seconds` is null) into one MP4 with a video track per stream,
 * no audio. Input seeking is frame-exact (ffmpeg decodes from the keyframe before
 * `start` and drops what precedes it), so every source frame lands in exactly one chunk.
 */
export function buildChunkCommand(o: EncodeOptions, start: number, seconds: number | null, out: string): string[] {
  const { args: videoArgs, thumbnailArgs } = videoEncodeArgs(o);
  return [
    ...COMMON_ARGS,
    '-ss', start.toFixed(3), ...(seconds === null ? [] : ['-t', seconds.toFixed(3)]),
    '-i', o.source,
    ...videoArgs,
    '-an', '-f', 'mp4', out,
    ...thumbnailArgs,
  ];
}

/**
 * The join: the chunks, concatenated by ffmpeg's concat demuxer (`concatList`:
 * each chunk's exact duration, so chunk n starts at n × chunk length) and copied,
 * not re-encoded, into the dash muxer, which writes one init segment per stream
 * and continuous fragment timestamps — the layout of a whole-video encode. Audio
 * is encoded here, once for the whole video, from the original.
 */
export function buildJoinCommand(o: EncodeOptions, concatList: string, streams: StreamPlan): string[] {
  return [
    ...COMMON_ARGS,
    // A sealed chunk is named by a loopback URL (shared/crypto/loopback.ts): the list may name http inputs.
    '-f', 'concat', '-safe', '0', '-protocol_whitelist', 'file,http,tcp', '-i', concatList,
    ...(streams.audio ? ['-i', o.source] : []),
    ...streams.video.flatMap((s) => ['-map', `0:v:${s.index}`]),
    ...(streams.audio ? ['-map', '1:a:0', ...AUDIO_ARGS] : []),
    '-map_metadata', '-1', '-map_chapters', '-1',
    '-c:v', 'copy',
    ...dashOutputArgs(o.outDir, streams, o.codecs),
  ];
}

/** A poster frame at `at` seconds, scaled to the top rung's size. */
export function buildPosterCommand(source: string, out: string, at: number, rung: Rung): string[] {
  return [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-y',
    '-ss', at.toFixed(3), '-i', source,
    '-frames:v', '1', '-vf', `scale=${rung.width}:${rung.height},setsar=${rung.sar}`,
    '-map_metadata', '-1', '-q:v', '3', out,
  ];
}
