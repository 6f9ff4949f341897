import { access } from 'node:fs/promises';

/** Whether `file` exists (and is reachable); never throws. */
export async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
