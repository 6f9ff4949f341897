/**
 * When a test fails while a local stack runs, print what the stack's processes
 * warned about (pino level ≥ warn, and anything that is not a JSON log line):
 * a CI log then says why a function answered 503, not only that it did.
 */
import { afterEach } from 'vitest';
import { liveStacks, stackWarnings } from '../helpers/stack.js';

afterEach(({ task }) => {
  if (task.result?.state !== 'fail') return;
  for (const stack of liveStacks) {
    console.error(stackWarnings(stack.url, stack.output()));
  }
});
