// `pulsevault encrypt` (compiled), killed as `kill -9` would at the step named by ENCRYPT_CRASH_AT.
import { run, stepObserver } from '../../dist/scripts/commands/encrypt.js';

const crashAt = process.env.ENCRYPT_CRASH_AT;
stepObserver.onStep = (step) => {
  if (step === crashAt) process.kill(process.pid, 'SIGKILL');
};

process.exit(await run(process.argv.slice(2)));
