import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Absolute path of an executable on PATH (or in sbin, where Debian puts nginx), or null. */
export function which(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  for (const dir of dirs.filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}
