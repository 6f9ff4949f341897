/**
 * The media edge under `npm start`: runs Debian's nginx in the foreground with
 * the configuration the local stack generated (services/media-edge/nginx-config.ts).
 * A Node process around nginx so that the supervisor manages it like every
 * other process: it stops nginx when asked, and when the supervisor dies
 * (nginx itself would live on as an orphan holding PORT).
 *
 * Usage: node dist/services/media-edge/main.js <nginx binary> <config file>
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { stopWithParent } from '../../shared/platform/lifecycle.js';

const [bin, conf] = process.argv.slice(2);
if (!bin || !conf) {
  process.stderr.write('usage: media-edge <nginx binary> <config file>\n');
  process.exit(64);
}
const nginx = spawn(bin, ['-p', path.dirname(conf), '-c', conf], { stdio: ['ignore', 'inherit', 'inherit'] });
nginx.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
// SIGQUIT: nginx finishes the responses in flight, then exits.
const stop = () => nginx.kill('SIGQUIT');
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
stopWithParent(() => nginx.kill('SIGTERM'));
