/**
 * File moves for finalize.
 *
 * `moveFile` renames within the volume; if the two paths are on different
 * filesystems (EXDEV: UPLOAD_DIR and VIDEO_DIR mounted apart) it copies to
 * `<dst>.part`, fsyncs, renames into place, fsyncs the directory and only then
 * removes the source. At every instant one complete copy exists under its
 * final or source name; `original.<ext>` never names a partial file.
 */
import { copyFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir, fsyncFile } from '../platform/atomic-file.js';

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
  await fsyncFile(part);
  await rename(part, dst);
  await fsyncDir(path.dirname(dst));
  await unlink(src);
}
