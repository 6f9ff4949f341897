/** `pulsevault console-export <dir>`: the web console as static files plus an nginx server block. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportConsole } from '../../services/console/export.js';

export const summary = 'write the web console (static files + nginx.conf) into <dir>';

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');

export async function run(args: string[]): Promise<number> {
  const [out] = args;
  if (!out || args.length > 1) {
    process.stderr.write('usage: pulsevault console-export <dir>\n');
    return 64;
  }
  for (const file of await exportConsole(ROOT, path.resolve(out))) process.stdout.write(`${file}\n`);
  return 0;
}
