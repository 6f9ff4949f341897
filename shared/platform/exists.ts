import { access, readdir } from 'node:fs/promises';

/** Whether `file` exists (and is reachable); never throws. */
export async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** The names in `dir`, or none when it does not exist yet (any other error is thrown). */
export async function readdirIfExists(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
