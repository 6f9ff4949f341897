/**
 * When a test fails while a local stack runs, print what the stack's processes
 * warned about (pino level ≥ warn, and anything that is not a JSON log line):
 * a CI log then says why a function answered 503, not only that it did.
 */
import { afterEach } from 'vitest';
import { liveStacks } from '../helpers/stack.js';

const MAX_LINES = 80;

function worthShowing(line: string): boolean {
  if (line.trim() === '') return false;
  try {
    const { level } = JSON.parse(line) as { level?: unknown };
    return !(level === 'trace' || level === 'debug' || level === 'info');
  } catch {
    return true;
  }
}

afterEach(({ task }) => {
  if (task.result?.state !== 'fail') return;
  for (const stack of liveStacks) {
    const lines = stack.output().split('\n').filter(worthShowing).slice(-MAX_LINES);
    console.error(`--- local stack at ${stack.url}: last ${lines.length} warning/error lines ---\n${lines.join('\n')}`);
  }
});
