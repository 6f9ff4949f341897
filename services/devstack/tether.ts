/**
 * A program that is not Node (redis-server, nginx) tied to the local stack's
 * lifetime: this Node process runs it in the foreground, hands the stop request
 * on as the signal the program wants (nginx: SIGQUIT to finish the responses in
 * flight; redis-server: SIGTERM to flush and exit), and stops it as well when
 * the devstack dies without asking (SIGKILL, a crash: the IPC channel closes,
 * shared/platform/lifecycle.ts), so no orphan keeps a port. Exits with the
 * program's code; 127 when the program cannot be started.
 *
 * Usage: node dist/services/devstack/tether.js <stop signal> <program> [arguments…]
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { stopWithParent } from '../../shared/platform/lifecycle.js';

const [stopSignal, program, ...args] = process.argv.slice(2);
if (!stopSignal || !(stopSignal in constants.signals) || !program) {
  process.stderr.write('usage: tether <stop signal> <program> [arguments…]\n');
  process.exit(64);
}
const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'] });
child.once('error', (err) => {
  process.stderr.write(`tether: cannot start ${program}: ${err.message}\n`);
  process.exit(127);
});
child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
const stop = () => child.kill(stopSignal as NodeJS.Signals);
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
stopWithParent(stop);
