// The videos function (compiled), killed as `kill -9` would before the disposal step named by DISPOSAL_CRASH_AT.
// Plain JS because the runtime imports it as a handler module beside the compiled ones.
import videos, { stepObserver } from '../../dist/functions/videos/handler.js';

const crashAt = process.env.DISPOSAL_CRASH_AT;
stepObserver.onStep = (step) => {
  if (step === crashAt) process.kill(process.pid, 'SIGKILL');
};

export default videos;
