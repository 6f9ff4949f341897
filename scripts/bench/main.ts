/**
 * `npm run bench [-- --full] [-- --only 3,4]`: every PulseVault figure beside a
 * reference measured on the same machine in the same run (see docs/benchmarks.md
 * "Benchmarks"). Boots the real local stack on a scratch MEDIA_ROOT, runs the
 * scenarios one after another, prints a markdown table and writes it to
 * test/bench/results-<date>-<mode>.md. A scenario that fails or whose tool is
 * missing is reported as not measured, never estimated.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SIZES, type BenchContext, type Mode } from './context.js';
import { benchAudit, verifyAuditChain } from './scenarios/audit.js';
import { benchAuditReport } from './scenarios/audit-report.js';
import { benchFanout } from './scenarios/fanout.js';
import { benchQueue } from './scenarios/queue.js';
import { benchSign } from './scenarios/sign.js';
import { benchStream } from './scenarios/stream.js';
import { benchTranscode } from './scenarios/transcode.js';
import { benchUpload } from './scenarios/upload.js';
import { benchWebhooks } from './scenarios/webhooks.js';
import { startBenchStack } from './stack.js';
import { renderTable, type Row } from './table.js';
import { ROOT, which } from './tools.js';

const { values } = parseArgs({ options: { full: { type: 'boolean', default: false }, only: { type: 'string' }, out: { type: 'string' } } });
const mode: Mode = values.full ? 'full' : 'quick';
const sizes = SIZES[mode];
const only = values.only ? new Set(values.only.split(',').map((s) => Number(s.trim()))) : null;
const wanted = (n: number) => !only || only.has(n);

const progress = (message: string) => process.stderr.write(`[bench] ${message}\n`);

/** The upload file, its stored copy and the reference's copy exist at once, plus the transcode scratch. */
const scratchParent = tmpdir();
const needBytes = 3 * sizes.uploadBytes + 1024 ** 3;
const { bavail, bsize } = statfsSync(scratchParent);
if (bavail * bsize < needBytes) {
  process.stderr.write(`not enough free space in ${scratchParent}: ${mode} mode needs ${(needBytes / 1024 ** 3).toFixed(1)} GiB\n`);
  process.exit(1);
}

const scratch = mkdtempSync(path.join(scratchParent, 'pv-bench-'));
const startedAt = new Date();
const loadBefore = loadavg()[0]!;
progress(`${mode} mode, scratch ${scratch}; starting the local stack`);
const stack = await startBenchStack(scratch).catch((err: unknown) => {
  rmSync(scratch, { recursive: true, force: true });
  throw err;
});
const ctx: BenchContext = { mode, sizes, scratch, stack, progress };

let interrupted = false;
process.once('SIGINT', () => {
  interrupted = true;
  progress('interrupted: stopping the stack and removing the scratch directory');
  void stack.stop().finally(() => {
    rmSync(scratch, { recursive: true, force: true });
    process.exit(130);
  });
});

/** Where the stack's log is kept when something failed (the scratch directory is removed). */
const keptLog = path.join(scratchParent, `${path.basename(scratch)}-stack.log`);
const rows: Row[] = [];
/** A scenario that throws leaves a row saying so (never a figure). */
async function scenario(numbers: number[], name: string, body: () => Promise<Row[]>): Promise<void> {
  if (!numbers.some(wanted) || interrupted) return;
  try {
    rows.push(...(await body()));
  } catch (err) {
    progress(`${name} failed: ${(err as Error).stack ?? String(err)}`);
    const stackGone = stack.unexpectedExit();
    const why = stackGone ? `the local stack ${stackGone} (its log is kept in ${keptLog})` : (err as Error).message.split('\n')[0];
    rows.push({ scenario: name, pulsevault: null, reference: null, referenceName: 'reference', better: 'higher', commands: [], note: `failed: ${why}` });
  }
}

let videoId: string | null = null;
await scenario([1, 2, 3, 4], '1–2. Upload and finalize', async () => {
  const result = await benchUpload(ctx);
  videoId = result.videoId;
  // Rows are numbered by their scenario (`1.`, `1′.`, `2.`): keep the ones asked for.
  return result.rows.filter((row) => wanted(Number(/^\d+/.exec(row.scenario)?.[0])));
});
await scenario([3], '3. Stream', async () => {
  if (!videoId) throw new Error('needs the video from scenario 1');
  return benchStream(ctx, videoId);
});
await scenario([4], '4. Sign', async () => {
  if (!videoId) throw new Error('needs the video from scenario 1');
  return benchSign(ctx, videoId);
});
/** Scenarios 5 and 6 need the transcoding pipeline (finalize enqueues, the connector hands the job to the transcoder). */
async function requireTranscoder(): Promise<void> {
  if (!(await stack.hasTranscoder())) throw new Error('this build has no transcoding pipeline (no queue connector service)');
}
await scenario([5], '5. Transcode', async () => {
  await requireTranscoder();
  return benchTranscode(ctx);
});
await scenario([6], '6. Queue latency', async () => {
  await requireTranscoder();
  return benchQueue(ctx);
});
await scenario([8], '8. Transcode fan-out', async () => {
  await requireTranscoder();
  return benchFanout(ctx);
});
let auditRows: Row[] = [];
let auditBroken = false;
await scenario([7], '7. Audit', async () => {
  auditRows = await benchAudit(ctx);
  return auditRows;
});

await scenario([9], '9. Audit report', () => benchAuditReport(ctx));
await scenario([10], '10. Webhooks', () => benchWebhooks(ctx));

progress('stopping the local stack');
await stack.stop();
if (auditRows.length > 0) {
  const verified = await verifyAuditChain(ctx);
  for (const row of auditRows) {
    row.commands.push(verified.command);
    row.note = `${row.note ?? ''}; chain ${verified.ok ? 'verified' : 'BROKEN'}: ${verified.summary.replaceAll(stack.auditDir, '<stack media>/audit')}`;
    if (!verified.ok) row.pulsevault = null;
  }
  auditBroken = !verified.ok;
}

// Scratch paths differ per run and the JWT is a credential: print placeholders.
const jwt = stack.authorization.slice('Bearer '.length);
for (const row of rows) row.commands = row.commands.map((c) => c.replaceAll(scratch, '<scratch>').replaceAll(jwt, '$JWT'));
const tools = ['wrk', 'hyperfine', 'nginx', 'openssl', 'ffmpeg'].map((t) => `${t} ${which(t) ? 'found' : 'MISSING (its references are skipped)'}`);
const markdown = renderTable(
  {
    title: `PulseVault benchmarks, ${mode} mode, ${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    context: [
      `machine: ${availableParallelism()} cores (nproc), ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`,
      `1-minute load average at start: ${loadBefore.toFixed(2)} (a shared machine is noisy: compare ratios, not absolutes)`,
      'ratio = PulseVault ÷ reference, both measured in this run, one after the other; MB = 10^6 bytes',
      `tools: ${tools.join(', ')}`,
      `run with: npm run bench${mode === 'full' ? ' -- --full' : ''}${values.only ? ` -- --only ${values.only}` : ''}`,
    ],
  },
  rows,
);
process.stdout.write(markdown);

const out = values.out ?? path.join(ROOT, 'test/bench', `results-${startedAt.toISOString().slice(0, 10)}-${mode}.md`);
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, markdown);
progress(`table written to ${path.relative(ROOT, out)}`);
if (rows.some((r) => r.note?.startsWith('failed'))) {
  copyFileSync(stack.logFile, keptLog);
  progress(`some scenarios failed; the stack's log is kept in ${keptLog}`);
}
if (auditBroken) progress(`the audit chain did not verify: ${stack.auditDir} is kept for \`pulsevault audit verify\``);
else rmSync(scratch, { recursive: true, force: true });
