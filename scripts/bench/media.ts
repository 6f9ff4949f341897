/**
 * Benchmark inputs, all generated (nothing binary is committed): lavfi clips,
 * large uploads that are still valid videos, plain files of random bytes.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { commandLine, requireTool, run } from './tools.js';

export interface ClipSpec {
  seconds: number;
  width: number;
  height: number;
  fps: number;
}

/** The ffmpeg arguments for a testsrc2 + sine H.264/AAC clip (faststart: moov first). */
export function clipArgs(file: string, c: ClipSpec): string[] {
  return [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${c.width}x${c.height}:rate=${c.fps}:duration=${c.seconds}`,
    '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${c.seconds}`,
    '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-g', String(c.fps * 2),
    '-c:a', 'aac', '-b:a', '128k', '-shortest', '-movflags', '+faststart', file,
  ];
}

/** Generate a clip; resolves with the command used. */
export async function makeClip(file: string, c: ClipSpec): Promise<string> {
  const ffmpeg = requireTool('ffmpeg');
  const args = clipArgs(file, c);
  await run(ffmpeg, args);
  return commandLine(ffmpeg, args);
}

const MIB = 1024 * 1024;

/**
 * A `bytes`-long file that finalize accepts as a video: a short clip followed
 * by one top-level MP4 `free` box holding the rest (random bytes; players and
 * ffprobe skip `free` boxes). Resolves with how it was made.
 */
export async function makeLargeVideo(file: string, bytes: number, scratchClip: string): Promise<string> {
  const clipCommand = await makeClip(scratchClip, { seconds: 2, width: 320, height: 240, fps: 25 });
  const clip = await readFile(scratchClip);
  const padding = bytes - clip.length;
  if (padding < 8 || padding > 0xffffffff) throw new Error(`cannot pad a ${clip.length}-byte clip to ${bytes} bytes with one free box`);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(padding, 0);
  header.write('free', 4, 'latin1');
  const block = randomBytes(MIB);
  const out = createWriteStream(file);
  const write = async (chunk: Buffer) => {
    if (!out.write(chunk)) await once(out, 'drain');
  };
  await write(clip);
  await write(header);
  let left = padding - 8;
  while (left > 0) {
    const n = Math.min(left, MIB);
    await write(n === MIB ? block : block.subarray(0, n));
    left -= n;
  }
  out.end();
  await once(out, 'finish');
  return `${clipCommand}; then a ${bytes}-byte file: that clip + an MP4 free box of random bytes (scripts/bench/media.ts)`;
}

export async function writeRandomFile(file: string, bytes: number): Promise<void> {
  await writeFile(file, randomBytes(bytes));
}
