/**
 * File moves and hashing for finalize.
 *
 * `moveFile` renames within the volume; if the two paths are on different
 * filesystems (EXDEV: UPLOAD_DIR and VIDEO_DIR mounted apart) it copies to
 * `<dst>.part`, fsyncs, renames into place, fsyncs the directory and only then
 * removes the source. At every instant one complete copy exists under its
 * final or source name; `original.<ext>` never names a partial file.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fsyncDir } from '../platform/atomic-file.js';

export async function moveFile(src: string, dst: string): Promise<void> {
  try {
    await rename(src, dst);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyAcrossFilesystems(src, dst);
  }
  await fsyncDir(path.dirname(dst));
  await fsyncDir(path.dirname(src));
}

async function copyAcrossFilesystems(src: string, dst: string): Promise<void> {
  const part = `${dst}.part`;
  await copyFile(src, part);
  const fd = await open(part, 'r+');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
  await rename(part, dst);
  await fsyncDir(path.dirname(dst));
  await unlink(src);
}

/** sha256 (hex) and size of a file, streamed: memory stays flat for a 20 GiB original. */
export async function sha256File(file: string): Promise<{ hex: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), async (chunks: AsyncIterable<Buffer>) => {
    for await (const chunk of chunks) {
      hash.update(chunk);
      size += chunk.length;
    }
  });
  return { hex: hash.digest('hex'), size };
}
