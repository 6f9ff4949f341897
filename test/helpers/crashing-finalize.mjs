// The finalize function (compiled), killed as `kill -9` would at the step named by FINALIZE_CRASH_AT
// of a request it serves: armed once start-up is over, so the start-up recovery of an earlier crash on
// the same volume (a step it repeats) finishes instead of killing it before it is ready.
// Plain JS because the runtime imports it as a handler module beside the compiled ones.
import finalize, { stepObserver } from '../../dist/functions/finalize/handler.js';

const crashAt = process.env.FINALIZE_CRASH_AT;
let armed = false;
stepObserver.onStep = (step) => {
  if (armed && step === crashAt) process.kill(process.pid, 'SIGKILL');
};

export default async (deps) => {
  const handler = await finalize(deps);
  armed = true;
  return handler;
};
