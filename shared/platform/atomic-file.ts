/**
 * Crash-safe file writes: temp file in the same directory → write → fsync →
 * rename → fsync the directory. A reader sees the old file or the new one, never
 * a torn write, and a crash never loses the file that was there before.
 */
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/** Make what `file` holds durable (opened read-only: fsync flushes the file whatever the open mode). */
export async function fsyncFile(file: string): Promise<void> {
  const fd = await open(file, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

/** Make the entries of `dir` durable: a rename into it, a file created or removed in it. */
export async function fsyncDir(dir: string): Promise<void> {
  await fsyncFile(dir);
}

/** Write `data` to `file` atomically, through `tmpName` (default `<file>.tmp`) in the same directory. */
export async function writeFileAtomic(file: string, data: string | Buffer, tmpName?: string): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, tmpName ?? `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = await open(tmp, 'w', 0o640);
  try {
    await fd.writeFile(data);
    await fd.sync();
  } catch (err) {
    await fd.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fd.close();
  await rename(tmp, file);
  await fsyncDir(dir);
}
