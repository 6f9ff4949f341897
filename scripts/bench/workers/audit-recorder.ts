/**
 * Audit clients for the audit benchmark, in one process as concurrent requests
 * of one function: `clients` loops, each making `count` record() calls one
 * after another (each awaited until durable, as a request handler awaits it),
 * through the real AuditLog against the stack's Redis and audit writer.
 * Configured from the environment like a function. Starts on a line on stdin
 * (so all writers start together); prints `{"count","startMs","endMs"}`.
 */
import { randomUUID } from 'node:crypto';
import { createAuditLog, type AuditEvent } from '../../../shared/audit/client.js';
import { loadConfigOrExit } from '../../../shared/platform/config.js';
import { createLogger } from '../../../shared/platform/log.js';
import { createRedis } from '../../../shared/platform/redis.js';
import { awaitGo, benchEvent, report, WARM_UP_RECORDS } from './barrier.js';

const count = Number(process.argv[2]);
const clients = Number(process.argv[3] ?? 1);
// A client of the audit log needs no secret (the writer signs checkpoints, functions sign URLs).
const config = loadConfigOrExit({ require: [] });
const log = createLogger('bench-audit-recorder', 'warn');
const redis = createRedis(config, { name: 'bench-audit-recorder', log });
const audit = createAuditLog(config, redis, log);
const events: AuditEvent[][] = Array.from({ length: clients }, () => Array.from({ length: count }, () => benchEvent(randomUUID())));
// Before the clock starts: connections and the acknowledgement subscription are set up, and the
// code is warm, as in a function that has been serving (a fresh process runs the audit client
// unoptimised for its first few thousand calls, ~3× the CPU per record).
await Promise.all(
  Array.from({ length: clients }, async () => {
    for (let i = 0; i < Math.ceil(WARM_UP_RECORDS / clients); i++) await audit.record(benchEvent(randomUUID()));
  }),
);

await awaitGo();
const startMs = performance.timeOrigin + performance.now();
await Promise.all(
  events.map(async (own) => {
    for (const event of own) await audit.record(event);
  }),
);
const endMs = performance.timeOrigin + performance.now();
report({ count: count * clients, startMs, endMs });
await audit.close();
redis.disconnect();
