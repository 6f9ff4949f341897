/**
 * 7. Audit: entries/s with 4 and with 64 concurrent clients (4 processes × 1
 *    and × 16 concurrent loops, as a function serves concurrent requests), each
 *    awaiting every record() until durable (as a request handler does), through
 *    the stack's Redis and audit writer; the chain is verified afterwards
 *    (`pulsevault audit verify`, once the stack has stopped). Reference: the
 *    naive durable log, the same clients appending the same event JSON to one
 *    file with an fdatasync per entry. Each row alternates the two ROUNDS times
 *    and shows the median of each side: one run of 8,000 entries lasts about
 *    half a second, and single runs of the 64-client row spread over 0.6–1.1×.
 */
import path from 'node:path';
import type { BenchContext } from '../context.js';
import { runTogether, workerCommand } from '../processes.js';
import type { Row } from '../table.js';
import { percentile } from '../table.js';
import { commandLine, ROOT, run } from '../tools.js';

/** Concurrent awaiting loops per client process: 4 × 1 and 4 × 16 clients. */
const CLIENTS_PER_PROCESS = [1, 16];
/** PulseVault, then the reference, this many times per row. */
const ROUNDS = 3;

export async function benchAudit(ctx: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  for (const clients of CLIENTS_PER_PROCESS) rows.push(await benchAuditClients(ctx, clients));
  return rows;
}

async function benchAuditClients(ctx: BenchContext, clientsPerProcess: number): Promise<Row> {
  const { stack, sizes } = ctx;
  const clients = sizes.auditWriters * clientsPerProcess;
  // The same total per row: each client writes its share.
  const perWriter = String(Math.ceil(sizes.auditEntriesPerWriter / clientsPerProcess));
  const writers = Array.from({ length: sizes.auditWriters }, () => [perWriter, String(clientsPerProcess)]);
  const env = { REDIS_URL: stack.redisUrl, AUDIT_WRITER_URL: stack.auditWriterUrl, AUDIT_INTAKE_KEY: stack.auditIntakeKey, MEDIA_ROOT: stack.mediaRoot, HMAC_SECRET: stack.hmacSecret, NODE_ENV: 'development', LOG_LEVEL: 'warn' };

  const file = path.join(ctx.scratch, 'naive-audit.log');
  const pv: Awaited<ReturnType<typeof runTogether>>[] = [];
  const ref: typeof pv = [];
  for (let round = 1; round <= ROUNDS; round++) {
    ctx.progress(`7. audit: ${clients} clients × ${perWriter} record() calls (round ${round} of ${ROUNDS})`);
    pv.push(await runTogether('audit-recorder', writers, env));
    ctx.progress('7. reference: fdatasync per appended line');
    ref.push(await runTogether('fsync-appender', writers.map((w) => [file, ...w])));
  }
  const rates = (runs: typeof pv) => runs.map((r) => Math.round(r.perSecond).toLocaleString('en-US')).join(', ');

  return {
    scenario: `7. Audit entries/s, ${clients} concurrent clients (${sizes.auditWriters} processes × ${clientsPerProcess}) × ${perWriter} entries, each awaited until durable`,
    pulsevault: { value: percentile(pv.map((r) => r.perSecond), 50), unit: 'entries/s' },
    reference: { value: percentile(ref.map((r) => r.perSecond), 50), unit: 'entries/s' },
    referenceName: 'one O_APPEND file, write + fdatasync per entry, no chain',
    better: 'higher',
    commands: [
      `${sizes.auditWriters} × REDIS_URL=<stack redis> AUDIT_WRITER_URL=<stack audit intake> AUDIT_INTAKE_KEY=<stack intake key> MEDIA_ROOT=<stack media> HMAC_SECRET=<stack secret> ${workerCommand('audit-recorder', [perWriter, String(clientsPerProcess)])}`,
      `${sizes.auditWriters} × ${workerCommand('fsync-appender', ['<scratch>/naive-audit.log', perWriter, String(clientsPerProcess)])}`,
    ],
    note: `median of ${ROUNDS} interleaved rounds of ${pv[0]!.count} entries each: PulseVault ${rates(pv)}; reference ${rates(ref)} entries/s`,
  };
}

/** `pulsevault audit verify` over the stack's audit directory (run after the stack stopped). */
export async function verifyAuditChain(ctx: BenchContext): Promise<{ ok: boolean; summary: string; command: string }> {
  const args = [path.join(ROOT, 'dist/scripts/pulsevault.js'), 'audit', 'verify'];
  const env = { MEDIA_ROOT: ctx.stack.mediaRoot, AUDIT_SIGNING_KEY: ctx.stack.auditSigningKey, SECRETS_DIR: path.join(ctx.scratch, 'no-secrets') };
  const command = commandLine('node', ['dist/scripts/pulsevault.js', 'audit', 'verify'], { MEDIA_ROOT: '<stack media>', AUDIT_SIGNING_KEY: '<key>' });
  try {
    const { stdout } = await run(process.execPath, args, { env });
    return { ok: true, summary: stdout.trim().split('\n').pop() ?? '', command };
  } catch (err) {
    const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
    const breaks = stdout.split('\n').filter((l) => l.startsWith('BREAK'));
    return { ok: false, summary: breaks.slice(0, 3).join('; ') || `${stdout}${stderr}`.trim().slice(-500) || String(err), command };
  }
}
