/** Test videos generated with ffmpeg's lavfi sources (nothing binary is committed). */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ClipOptions {
  seconds?: number;
  width?: number;
  height?: number;
  fps?: number;
  audio?: boolean;
  /** Extra output options, e.g. ['-f', 'matroska']. */
  extra?: string[];
  /** Tag the video stream with a display rotation (as phones do for portrait video). */
  rotate?: number;
}

/** A testsrc2 (+ sine) H.264/AAC clip, ≤ 6 s and ≤ 720p by default. */
export async function makeClip(file: string, o: ClipOptions = {}): Promise<string> {
  const { seconds = 2, width = 320, height = 240, fps = 25, audio = true, extra = [], rotate } = o;
  const args = ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}:duration=${seconds}`];
  if (audio) args.push('-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`);
  args.push('-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-g', String(fps * 2));
  if (audio) args.push('-c:a', 'aac', '-b:a', '64k');
  if (rotate === undefined) {
    await run('ffmpeg', [...args, '-shortest', ...extra, file]);
    return file;
  }
  // ffmpeg 5 ignores rotate metadata while encoding; a stream-copy remux writes the display matrix.
  const plain = `${file}.plain.mp4`;
  await run('ffmpeg', [...args, '-shortest', plain]);
  await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-i', plain, '-c', 'copy', '-metadata:s:v:0', `rotate=${rotate}`, ...extra, file]);
  await rm(plain, { force: true });
  return file;
}
