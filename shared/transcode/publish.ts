/**
 * Crash-safe publishing of a transcode's outputs. Everything is built in a
 * work directory inside the video directory (same filesystem, so rename works),
 * then made visible with one rename: a reader sees the old ladder or the new
 * one, never half of one. A directory can only be renamed onto an absent or
 * empty one, so an existing ladder is first renamed aside, then removed.
 * Work and retired directories a killed transcode left behind are removed by the
 * next transcode of that video (which holds the video's lease).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir } from '../platform/atomic-file.js';

const WORK_PREFIX = '.transcode-';
const RETIRED_PREFIX = '.retired-';

export async function createWorkDir(videoDir: string): Promise<string> {
  const dir = path.join(videoDir, `${WORK_PREFIX}${randomBytes(6).toString('hex')}`);
  await mkdir(dir, { mode: 0o750 });
  return dir;
}

/** Make `workDir` visible as `videoDir/<name>`, replacing what was there. */
export async function publishDir(workDir: string, videoDir: string, name: string): Promise<void> {
  const target = path.join(videoDir, name);
  const retired = path.join(videoDir, `${RETIRED_PREFIX}${randomBytes(6).toString('hex')}`);
  let hadOld = true;
  try {
    await rename(target, retired);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    hadOld = false;
  }
  await rename(workDir, target);
  await fsyncDir(videoDir);
  if (hadOld) await rm(retired, { recursive: true, force: true });
}

/** Work and retired directories of earlier, interrupted transcodes. */
export async function leftovers(videoDir: string): Promise<string[]> {
  const names = await readdir(videoDir).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(WORK_PREFIX) || n.startsWith(RETIRED_PREFIX)).map((n) => path.join(videoDir, n));
}

export async function removeLeftovers(videoDir: string): Promise<number> {
  const found = await leftovers(videoDir);
  await Promise.all(found.map((dir) => rm(dir, { recursive: true, force: true })));
  return found.length;
}
