/**
 * ffprobe (through fluent-ffmpeg) of an uploaded file: what it is, never what the
 * client said it is. The container decides the stored extension.
 */
import ffmpeg from 'fluent-ffmpeg';
import { UnprocessableError } from '../platform/errors.js';

export interface ProbeResult {
  /** Extension for the stored original, from the probed container (mp4, mov, mkv, webm, …). */
  extension: string;
  formatName: string;
  duration: number;
  /** Display size (rotation applied): what a player shows. */
  width: number;
  height: number;
  rotation: number;
  fps: number | null;
  videoCodec: string;
  audioCodec: string | null;
  hasAudio: boolean;
  /** Overall bitrate in bits/s. */
  bitrate: number | null;
}

// fluent-ffmpeg flattens the display-matrix side data onto the stream as `rotation`.
type Stream = ffmpeg.FfprobeStream & { rotation?: number | string };

const BY_FORMAT_NAME: Record<string, string> = { avi: 'avi', mpegts: 'ts', mpeg: 'mpg', flv: 'flv', asf: 'wmv', ogg: 'ogv', '3gp': '3gp' };

/** Every extension an original can be stored with (the stream function must serve each). */
export const STORED_EXTENSIONS: readonly string[] = ['mp4', 'mov', 'mkv', 'webm', ...Object.values(BY_FORMAT_NAME)];

/** Containers we keep, by ffprobe `format_name`. Image formats and audio-only files are refused. */
function extensionFor(formatName: string, majorBrand: string | undefined, videoCodec: string): string | null {
  if (formatName.startsWith('mov,mp4')) return majorBrand?.trim() === 'qt' ? 'mov' : 'mp4';
  if (formatName === 'matroska,webm') return ['vp8', 'vp9', 'av1'].includes(videoCodec) ? 'webm' : 'mkv';
  return BY_FORMAT_NAME[formatName] ?? null;
}

function rate(r: string | undefined): number | null {
  if (!r) return null;
  const [n, d] = r.split('/').map(Number);
  if (!n || !d) return null;
  return Math.round((n / d) * 1000) / 1000;
}

function ffprobe(file: string): Promise<ffmpeg.FfprobeData> {
  return new Promise((resolve, reject) => ffmpeg.ffprobe(file, (err, data) => (err ? reject(err as Error) : resolve(data))));
}

export async function probe(file: string): Promise<ProbeResult> {
  let data: ffmpeg.FfprobeData;
  try {
    data = await ffprobe(file);
  } catch {
    // ffprobe's message names the file path; keep it out of the response.
    throw new UnprocessableError('the file is not a readable video (ffprobe could not parse it)', 'not_a_video');
  }
  const video = data.streams.find((s) => s.codec_type === 'video' && !s.disposition?.attached_pic) as Stream | undefined;
  const audio = data.streams.find((s) => s.codec_type === 'audio');
  const formatName = data.format.format_name ?? '';
  const duration = Number(data.format.duration ?? video?.duration ?? NaN);
  if (!video || !video.width || !video.height) throw new UnprocessableError('the file has no video stream', 'not_a_video');
  const videoCodec = video.codec_name ?? 'unknown';
  const extension = extensionFor(formatName, data.format.tags?.major_brand as string | undefined, videoCodec);
  if (!extension) throw new UnprocessableError(`unsupported container (${formatName || 'unknown'})`, 'unsupported_container');
  if (!Number.isFinite(duration) || duration <= 0) throw new UnprocessableError('the video has no duration (truncated or corrupt?)', 'not_a_video');

  const rotationRaw = Number(video.rotation ?? video.tags?.rotate ?? 0) || 0;
  const rotation = ((Math.round(rotationRaw) % 360) + 360) % 360;
  const swap = rotation === 90 || rotation === 270;
  const bitrate = Number(data.format.bit_rate);
  return {
    extension,
    formatName,
    duration: Math.round(duration * 1000) / 1000,
    width: swap ? video.height : video.width,
    height: swap ? video.width : video.height,
    rotation,
    fps: rate(video.avg_frame_rate) ?? rate(video.r_frame_rate),
    videoCodec,
    audioCodec: audio?.codec_name ?? null,
    hasAudio: Boolean(audio),
    bitrate: Number.isFinite(bitrate) && bitrate > 0 ? bitrate : null,
  };
}
