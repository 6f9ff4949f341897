/**
 * Reference for the audit benchmark: the naive durable log. `clients` loops in
 * this process, each `count` times appending one line (the same event JSON the
 * audit log carries) to a shared file opened O_APPEND and fdatasyncing it
 * before its next — no chain, no Redis, no sequencer. Starts on a line on stdin; prints `{"count","startMs","endMs"}`.
 */
import { randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';
import { toSubmittedEvent } from '../../../shared/audit/client.js';
import { subjectPseudonym } from '../../../shared/audit/subject.js';
import { awaitGo, benchEvent, report, WARM_UP_RECORDS } from './barrier.js';

const [file, countArg, clientsArg] = process.argv.slice(2);
const count = Number(countArg);
const clients = Number(clientsArg ?? 1);
// The user id pseudonymised as record() does (events carry a pseudonym, never a subject); any key will do here.
const line = (event: ReturnType<typeof benchEvent>) => `${JSON.stringify(toSubmittedEvent({ ...event, actor: { role: null, userId: subjectPseudonym('bench-reference', event.actor!.userId!) } }))}\n`;
const lines = Array.from({ length: clients }, () => Array.from({ length: count }, () => line(benchEvent(randomUUID()))));
const handle = await open(file!, 'a');
// Warmed like the audit clients: the same number of appends before the clock starts.
await Promise.all(
  lines.map(async (own) => {
    for (let i = 0; i < Math.ceil(WARM_UP_RECORDS / clients); i++) {
      await handle.write(own[i % own.length]!);
      await handle.datasync();
    }
  }),
);

await awaitGo();
const startMs = performance.timeOrigin + performance.now();
await Promise.all(
  lines.map(async (own) => {
    for (const line of own) {
      await handle.write(line);
      await handle.datasync();
    }
  }),
);
const endMs = performance.timeOrigin + performance.now();
report({ count: count * clients, startMs, endMs });
await handle.close();
