// The finalize function (compiled), killed as `kill -9` would at the step named by FINALIZE_CRASH_AT.
// Plain JS because the runtime imports it as a handler module beside the compiled ones.
import finalize, { stepObserver } from '../../dist/functions/finalize/handler.js';

const crashAt = process.env.FINALIZE_CRASH_AT;
stepObserver.onStep = (step) => {
  if (step === crashAt) process.kill(process.pid, 'SIGKILL');
};

export default finalize;
