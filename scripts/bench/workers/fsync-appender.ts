/**
 * Reference for the audit benchmark: the naive durable log. `count` times,
 * append one line (the same event JSON the audit log carries) to a shared file
 * opened O_APPEND and fdatasync it before the next — no chain, no Redis, no
 * sequencer. Starts on a line on stdin; prints `{"count","startMs","endMs"}`.
 */
import { randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';
import { toSubmittedEvent } from '../../../shared/audit/client.js';
import { awaitGo, benchEvent, report } from './barrier.js';

const [file, countArg] = process.argv.slice(2);
const count = Number(countArg);
const lines = Array.from({ length: count }, () => `${JSON.stringify(toSubmittedEvent(benchEvent(randomUUID())))}\n`);
const handle = await open(file!, 'a');

await awaitGo();
const startMs = performance.timeOrigin + performance.now();
for (const line of lines) {
  await handle.write(line);
  await handle.datasync();
}
const endMs = performance.timeOrigin + performance.now();
report({ count, startMs, endMs });
await handle.close();
