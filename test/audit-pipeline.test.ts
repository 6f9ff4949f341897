/**
 * The whole audit pipeline with real processes: recorder processes calling
 * record() (as function replicas do), the compiled audit writer service, a real
 * redis-server, real files. Proves one chain from many writers, exactly-once
 * across a writer crash and takeover, and fail-closed behaviour.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHmac } from 'node:crypto';
import { connect } from 'node:net';
import { pino } from 'pino';
import { performance } from 'node:perf_hooks';
import { freePort } from '../services/devstack/supervisor.js';
import { AuditUnavailableError, createAuditLog, toSubmittedEvent } from '../shared/audit/client.js';
import { authProof, intakeKey, LineSplitter, MAX_LINE_BYTES, type DirectReply } from '../shared/audit/direct.js';
import type { AuditEntry } from '../shared/audit/entry.js';
import { AUDIT_ACK_CHANNEL, AUDIT_LEASE_KEY, AUDIT_STREAM, decodeAck, type AckMessage } from '../shared/audit/stream.js';
import { verifyAuditLog } from '../shared/audit/verify.js';
import { AuditWriter } from '../shared/audit/writer.js';
import { loadConfig } from '../shared/platform/config.js';
import { toHttpError } from '../shared/platform/errors.js';
import { createLogger } from '../shared/platform/log.js';
import { createRedis } from '../shared/platform/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET, TEST_INTAKE_KEY } from './helpers/secrets.js';
import { waitFor } from './helpers/wait.js';

const DIST = path.resolve('dist');
const VIDEO = '3c1d2b7e-5f4a-4e2b-9c8d-7a6b5c4d3e2f';

let redis: TestRedis;
const dirs: string[] = [];
const children = new Set<ChildProcess>();

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL')));
  await redis.client().flushall();
});
afterAll(async () => {
  await redis?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function auditDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'pv-audit-pipe-'));
  dirs.push(d);
  return path.join(d, 'audit');
}

function baseEnv(dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, AUDIT_INTAKE_KEY: TEST_INTAKE_KEY, SECRETS_DIR: '/nonexistent', REDIS_URL: redis.url, AUDIT_DIR: dir, MEDIA_ROOT: path.dirname(dir), LOG_LEVEL: 'info', ...extra };
}

interface Child {
  proc: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function launch(args: string[], env: NodeJS.ProcessEnv, ids: { uid?: number; gid?: number } = {}): Child {
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], ...ids });
  children.add(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => (children.delete(proc), resolve(code))));
  return { proc, output: () => out, exited };
}

async function stopChild(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill(signal);
  await exited;
}

function startWriter(dir: string, extra: Record<string, string> = {}, ids: { uid?: number; gid?: number } = {}): Child {
  return launch([path.join(DIST, 'services/audit-writer/main.js')], baseEnv(dir, { AUDIT_WRITER_LEASE_SECONDS: '2', ...extra }), ids);
}

/** A recorder process: `count` record() calls, `parallel` at a time, as a function replica under load makes them. */
const RECORDER = `
const [{ loadConfig }, { createAuditLog }, { createLogger }, { createRedis }] = await Promise.all(
  ['shared/platform/config.js', 'shared/audit/client.js', 'shared/platform/log.js', 'shared/platform/redis.js'].map((m) => import(process.env.DIST + '/' + m)));
const config = loadConfig();
const redis = createRedis(config, { name: 'recorder' });
const audit = createAuditLog(config, redis, createLogger('recorder', 'error'));
const actions = [['access', 'stream'], ['upload', 'finalize'], ['transcode', 'transcode.start']];
const count = Number(process.env.COUNT);
const ok = [], failed = [];
let next = 0;
await Promise.all(Array.from({ length: Number(process.env.PARALLEL) }, async () => {
  while (next < count) {
    const n = next++;
    const requestId = 'w' + process.env.WORKER + '-' + n;
    try {
      const [category, action] = actions[n % 3];
      await audit.record({ category, action, outcome: 'granted', videoId: process.env.VIDEO, clientIp: '203.0.113.9', requestId });
      ok.push(requestId);
    } catch (err) {
      // Why, for a failing test's message (the ids alone say nothing).
      failed.push(requestId + ': ' + err.message);
    }
  }
}));
await audit.close();
redis.disconnect();
process.stdout.write(JSON.stringify({ ok, failed }));
`;

async function runRecorders(dir: string, workers: number, count: number, parallel: number, extra: Record<string, string> = {}): Promise<{ ok: string[]; failed: string[] }[]> {
  const procs = Array.from({ length: workers }, (_, w) =>
    launch(['--input-type=module', '-e', RECORDER], baseEnv(dir, { DIST, WORKER: String(w), COUNT: String(count), PARALLEL: String(parallel), VIDEO, ...extra })),
  );
  return Promise.all(
    procs.map(async (p) => {
      const code = await p.exited;
      if (code !== 0) throw new Error(`recorder exited with ${code}: ${p.output()}`);
      return JSON.parse(p.output()) as { ok: string[]; failed: string[] };
    }),
  );
}

function readEntries(dir: string): AuditEntry[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.log'))
    .flatMap((f) => readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditEntry));
}

function countByRequestId(entries: AuditEntry[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of entries) counts.set(e.requestId!, (counts.get(e.requestId!) ?? 0) + 1);
  return counts;
}

describe('one chain per category from many writers', () => {
  it('4 processes × 500 concurrent record() calls: every entry once, in one verified chain per category', async () => {
    const dir = auditDir();
    // The deployed lease (10 s), not the 2 s the takeover tests need: on a loaded machine a 2 s lease can lapse between renewals.
    const writer = startWriter(dir, { AUDIT_WRITER_LEASE_SECONDS: '10' });
    const results = await runRecorders(dir, 4, 500, 25, { AUDIT_ACK_TIMEOUT_MS: '20000' });
    const acknowledged = results.flatMap((r) => r.ok);
    expect(results.flatMap((r) => r.failed)).toEqual([]);
    expect(acknowledged).toHaveLength(2000);

    // Acknowledged means already in the file: read before stopping the writer.
    const counts = countByRequestId(readEntries(dir));
    expect(counts.size).toBe(2000);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    for (const id of acknowledged) expect(counts.get(id)).toBe(1);

    await stopChild(writer.proc);
    const report = await verifyAuditLog(dir, TEST_AUDIT_KEY);
    expect(report.breaks).toEqual([]);
    expect(report.files.reduce((n, f) => n + f.entries, 0)).toBe(2000);
    for (const category of ['access', 'upload', 'transcode']) {
      const seqs = readEntries(dir).filter((e) => e.category === category).map((e) => e.seq);
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    }
  });

  it('a standby writer takes over from a killed one: nothing acknowledged is lost, nothing is written twice, a torn line is repaired', async () => {
    const dir = auditDir();
    const first = startWriter(dir);
    await waitFor(() => first.output().includes('lease acquired'), 20_000, 'the first writer to take the lease');
    const standby = startWriter(dir);
    await waitFor(() => standby.output().includes('standing by'), 20_000, 'the second writer to stand by');

    const recording = runRecorders(dir, 2, 400, 4, { AUDIT_ACK_TIMEOUT_MS: '1500' });
    await waitFor(() => readEntries(dir).length >= 150, 30_000, 'entries from the first writer');
    await stopChild(first.proc, 'SIGKILL');
    const byFirstWriter = readEntries(dir).length;
    // A crash mid-append leaves a partial line; the next writer must cut it off, not chain after it.
    const newest = readdirSync(dir).filter((f) => f.startsWith('access-')).sort().pop()!;
    appendFileSync(path.join(dir, newest), '{"seq":999999,"ts":"20');

    const results = await recording;
    await waitFor(() => standby.output().includes('lease acquired'), 20_000, 'the standby to take over');
    const acknowledged = results.flatMap((r) => r.ok);
    // More was acknowledged than the first writer ever wrote: the standby carried on mid-load.
    expect(acknowledged.length).toBeGreaterThan(byFirstWriter);
    await waitFor(() => countByRequestId(readEntries(dir)).size >= acknowledged.length, 20_000, 'the standby to catch up');

    await stopChild(standby.proc);
    expect(standby.output()).toContain('cutting off a torn last line');
    const counts = countByRequestId(readEntries(dir));
    for (const id of acknowledged) expect(counts.get(id), id).toBe(1);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });
});

describe('record() calls made together (one stream entry per event-loop turn)', () => {
  const event = (requestId: string) => ({ category: 'access' as const, action: 'stream' as const, outcome: 'granted' as const, videoId: VIDEO, requestId });
  const requestIds = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

  /** A writer, an audit log, a raw connection writing entries of its own, and every acknowledgement on every channel. */
  async function observedPipeline() {
    const dir = auditDir();
    const writer = startWriter(dir);
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '20000' }) as NodeJS.ProcessEnv);
    const conn = createRedis(config, { name: 'test' });
    const acks = createRedis(config, { name: 'test-acks', blocking: true });
    const seen: { channel: string; ack: AckMessage }[] = [];
    acks.on('pmessage', (_pattern: string, channel: string, message: string) => seen.push({ channel, ack: decodeAck(message)! }));
    await acks.psubscribe(`${AUDIT_ACK_CHANNEL}*`);
    const audit = createAuditLog(config, conn, createLogger('pipeline-test', 'error'));
    return {
      dir,
      writer,
      conn,
      audit,
      intruder: redis.client(),
      seen,
      durable: () => seen.flatMap(({ ack }) => ack.durable),
      rejected: () => seen.flatMap(({ ack }) => ack.rejected),
      async close() {
        await audit.close();
        conn.disconnect();
        acks.disconnect();
        await stopChild(writer.proc);
      },
    };
  }

  it('each gets its own acknowledgement; a malformed event on the stream among them is refused alone', async () => {
    const { dir, writer, conn, audit, intruder, durable, rejected, close } = await observedPipeline();
    try {
      await audit.record(event('warm-up'));
      const xadds = vi.spyOn(conn, 'xadd');
      // Same turn: the raw XADD goes out at once, the 40 record() calls as one stream entry right after it.
      const first = requestIds('a', 20).map((id) => audit.record(event(id)));
      const malformed = intruder.xadd(AUDIT_STREAM, '*', 'event', JSON.stringify({ category: 'access', action: 'watched Jane Doe' }));
      const second = requestIds('b', 20).map((id) => audit.record(event(id)));
      await Promise.all([...first, ...second]);
      expect(xadds).toHaveBeenCalledTimes(1);
      const malformedId = (await malformed)!;
      await waitFor(() => rejected().includes(malformedId), 10_000, 'the malformed event to be refused');
      expect(durable()).not.toContain(malformedId);
      const entries = readEntries(dir).filter((e) => /^[ab]-/.test(e.requestId!));
      expect(entries.map((e) => e.requestId).sort()).toEqual([...requestIds('a', 20), ...requestIds('b', 20)].sort());
      // One stream entry: its events are <entry id>.0 … .39, in the order the calls were made.
      const entryId = entries[0]!.streamId.split('.')[0];
      expect(entries.map((e) => e.streamId)).toEqual(entries.map((_, i) => `${entryId}.${i}`));
      expect(entries.map((e) => e.requestId)).toEqual([...requestIds('a', 20), ...requestIds('b', 20)]);

      // A malformed event inside an entry of several is refused alone; its neighbours are written.
      const mixed = (await intruder.xadd(AUDIT_STREAM, '*', 'event', JSON.stringify(toSubmittedEvent(event('c-0'))), 'event', '{"category":"access"}', 'event', JSON.stringify(toSubmittedEvent(event('c-2')))))!;
      await waitFor(() => rejected().includes(`${mixed}.1`), 10_000, 'the malformed event of the entry to be refused');
      expect(durable()).toEqual(expect.arrayContaining([`${mixed}.0`, `${mixed}.2`]));
      expect(durable()).not.toContain(`${mixed}.1`);
      await waitFor(() => readEntries(dir).filter((e) => e.requestId?.startsWith('c-')).length === 2, 10_000, 'the two good events of the entry');
      expect(writer.output()).toContain('refused malformed audit events');
    } finally {
      await close();
    }
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it("acknowledgements go to the submitting process' own channel only; an entry naming a malformed channel is refused", async () => {
    const { dir, conn, audit, intruder, seen, close } = await observedPipeline();
    try {
      const xadds = vi.spyOn(conn, 'xadd');
      await Promise.all(requestIds('own', 5).map((id) => audit.record(event(id))));
      const ackId = xadds.mock.calls[0]![3] as string;
      const ids = readEntries(dir).filter((e) => e.requestId?.startsWith('own-')).map((e) => e.streamId);
      expect(ids).toHaveLength(5);
      const carrying = seen.filter(({ ack }) => ack.durable.some((id) => ids.includes(id)));
      expect(carrying.map(({ channel }) => channel)).toEqual([`${AUDIT_ACK_CHANNEL}:${ackId}`]);
      expect(carrying[0]!.ack.durable).toEqual(ids);

      const forged = (await intruder.xadd(AUDIT_STREAM, '*', 'ack', 'x*', 'event', JSON.stringify(toSubmittedEvent(event('forged')))))!;
      await waitFor(() => seen.some(({ channel, ack }) => channel === AUDIT_ACK_CHANNEL && ack.rejected.includes(forged)), 10_000, 'the entry to be refused on the shared channel');
      expect(readEntries(dir).some((e) => e.requestId === 'forged')).toBe(false);
    } finally {
      await close();
    }
  });

  it('Redis frozen: every call of the pipeline rejects with a 503 within the ack timeout, none resolves', async () => {
    const dir = auditDir();
    const writer = startWriter(dir);
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '1500', REDIS_COMMAND_TIMEOUT_MS: '500' }) as NodeJS.ProcessEnv);
    const conn = createRedis(config, { name: 'test' });
    conn.on('error', () => {});
    const audit = createAuditLog(config, conn, createLogger('coalesce-freeze-test', 'error'));
    try {
      // The new writer may still be waiting for the last test's lease: poll (each try is bounded by the 1.5 s ack timeout).
      await waitFor(() => audit.record(event('before-freeze')).then(() => true, () => false), 20_000, 'the writer to acknowledge an entry');
      redis.signal('SIGSTOP');
      const started = performance.now();
      const outcomes = await Promise.all(requestIds('frozen', 30).map((id) => audit.record(event(id)).then(() => 'resolved', (e: unknown) => e)));
      const elapsed = performance.now() - started;
      redis.signal('SIGCONT');
      for (const outcome of outcomes) {
        expect(outcome).toBeInstanceOf(AuditUnavailableError);
        expect(toHttpError(outcome).status).toBe(503);
      }
      expect(elapsed).toBeLessThan(10 * 1_500); // 10× the ack timeout: refused, not hung
    } finally {
      redis.signal('SIGCONT');
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
  });
});

describe('fail closed', () => {
  it('Redis stopped: record() rejects at once with a 503, and works again once Redis is back', async () => {
    const dir = auditDir();
    const writer = startWriter(dir);
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '60000' }) as NodeJS.ProcessEnv);
    const log = createLogger('fail-closed-test', 'error');
    const conn = createRedis(config, { name: 'test' });
    conn.on('error', () => {});
    const audit = createAuditLog(config, conn, log);
    try {
      await audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'before-outage' });

      await redis.stop();
      // With a 60 s ack timeout, a rejection with reason `redis` shows it did not wait for the timeout.
      const err = await waitFor(
        () => audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'during-outage' }).then(() => null, (e: unknown) => e),
        20_000,
        'record() to reject',
      );
      expect(err).toBeInstanceOf(AuditUnavailableError);
      expect((err as AuditUnavailableError).reason).toBe('redis');
      expect(toHttpError(err).status).toBe(503);
      expect(toHttpError(err).code).toBe('audit_unavailable');

      await redis.start();
      await waitFor(
        () => audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'after-outage' }).then(() => true, () => false),
        30_000,
        'record() to succeed after Redis is back',
      );
      const ids = readEntries(dir).map((e) => e.requestId);
      expect(ids).toContain('before-outage');
      expect(ids).toContain('after-outage');
      expect(ids).not.toContain('during-outage');
    } finally {
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('Redis not reachable yet when a process starts: the first record() waits for the first connection (bounded) instead of failing at once', async () => {
    // A replica that starts while its first Redis connection is still failing
    // (Redis restarting, or a CPU-starved process whose connect timed out) must
    // not refuse its first requests: nothing is "known to be away" yet.
    const dir = auditDir();
    const writer = startWriter(dir);
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '8000' }) as NodeJS.ProcessEnv);
    await redis.stop();
    const conn = createRedis(config, { name: 'test' });
    conn.on('error', () => {});
    const audit = createAuditLog(config, conn, createLogger('startup-test', 'error'));
    try {
      // Both connections are now failing and retrying (status `reconnecting`).
      await waitFor(() => conn.status === 'reconnecting', 5_000, 'the first connection attempt to fail');
      const recorded = audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'at-startup' });
      await redis.start();
      await recorded;
      expect(readEntries(dir).map((e) => e.requestId)).toContain('at-startup');
    } finally {
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
  });

  it('audit dir not writable: record() rejects with a 503; the entry is written once the dir is writable again', async () => {
    const dir = auditDir();
    chmodSync(path.dirname(dir), 0o755); // mkdtemp makes it 0700: the unprivileged writer must reach the audit dir
    mkdirSync(dir, { mode: 0o555 });
    chmodSync(dir, 0o555);
    // As root, permissions do not bind: run the writer as an unprivileged user, as it runs in its pod.
    const writer = startWriter(dir, {}, { uid: 65534, gid: 65534 });
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '1500' }) as NodeJS.ProcessEnv);
    const conn = createRedis(config, { name: 'test' });
    const audit = createAuditLog(config, conn, createLogger('readonly-test', 'error'));
    try {
      await waitFor(() => writer.output().includes('EACCES'), 20_000, 'the writer to hit the read-only dir');
      const err = await audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'unwritable' }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(AuditUnavailableError);
      expect(toHttpError(err).status).toBe(503);

      chmodSync(dir, 0o777);
      // The refused access's entry stayed queued: the writer retries and writes it late.
      await waitFor(() => readEntries(dir).some((e) => e.requestId === 'unwritable'), 20_000, 'the queued entry to be written');
      await audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, requestId: 'writable-again' });
      // The log may show more than was served (an entry for a refused access), never less.
      expect(readEntries(dir).map((e) => e.requestId)).toEqual(['unwritable', 'writable-again']);
    } finally {
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
  });
});

describe("direct submission (the writer's intake, shared/audit/intake.ts)", () => {
  const event = (requestId: string) => ({ category: 'access' as const, action: 'stream' as const, outcome: 'granted' as const, videoId: VIDEO, requestId });

  /** XADD calls Redis has served: events that went through the stream. */
  async function streamAdds(): Promise<number> {
    const stats = await redis.client().info('commandstats');
    return Number(/^cmdstat_xadd:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
  }

  /**
   * A writer with its intake open. It holds the production default lease (10 s): a writer whose
   * loop stalls past its lease answers `unavailable`, which these tests count as a failure, and a
   * 2 s lease is shorter than a batch's stall on a loaded machine.
   */
  async function intakeWriter(dir: string, extra: Record<string, string> = {}) {
    const port = await freePort();
    const writer = startWriter(dir, { AUDIT_INTAKE_PORT: String(port), AUDIT_WRITER_LEASE_SECONDS: '10', ...extra });
    await waitFor(() => writer.output().includes('audit intake open'), 20_000, 'the writer to open its intake');
    const key = intakeKey(TEST_INTAKE_KEY);
    return { writer, port, url: `tcp://127.0.0.1:${port}`, key };
  }

  /** A raw connection to the intake that has proven the key (READY read). */
  async function authenticatedSession(port: number, key: Buffer) {
    const session = await intakeSession(port);
    session.send(`AUTH ${authProof(key, (await session.line()).split(' ')[1]!)}\n`);
    expect(await session.line()).toBe('READY');
    return session;
  }

  /** An audit writer in this process (batches handed to sequenceDirect without the intake): `steps` once it appends, then stopped. */
  async function withWriter(dir: string, leaseMs: number, steps: (writer: AuditWriter) => Promise<void>): Promise<void> {
    const config = loadConfig(baseEnv(dir) as NodeJS.ProcessEnv);
    const conns = [createRedis(config, { name: 'writer' }), createRedis(config, { name: 'reader', blocking: true })] as const;
    for (const c of conns) c.on('error', () => {});
    const writer = new AuditWriter({ auditDir: dir, signingKey: TEST_AUDIT_KEY, redis: conns[0], reader: conns[1], log: createLogger('in-process-writer', 'error'), leaseMs });
    void writer.start();
    try {
      await waitFor(() => writer.sequenceDirect([]).then(() => true, () => false), 20_000, 'the writer to append');
      await steps(writer);
    } finally {
      await writer.stop();
      for (const c of conns) c.disconnect();
    }
  }

  /** Record until a call is acknowledged without touching the stream: the direct connection is up. */
  async function untilDirect(audit: { record(e: ReturnType<typeof event>): Promise<void> }): Promise<void> {
    let n = 0;
    await waitFor(
      async () => {
        const before = await streamAdds();
        const ok = await audit.record(event(`probe-${n++}`)).then(() => true, () => false);
        return ok && (await streamAdds()) === before;
      },
      20_000,
      'record() to reach the writer directly',
    );
  }

  it('4 processes × 500 concurrent record() calls handed over directly: every entry once, one verified chain, the stream (almost) unused', async () => {
    const dir = auditDir();
    // The deployed lease (10 s), as in the test above.
    const { writer, url } = await intakeWriter(dir);
    const addsBefore = await streamAdds();
    const results = await runRecorders(dir, 4, 500, 25, { AUDIT_ACK_TIMEOUT_MS: '20000', AUDIT_WRITER_URL: url });
    const acknowledged = results.flatMap((r) => r.ok);
    expect(results.flatMap((r) => r.failed), writer.output()).toEqual([]);
    expect(acknowledged).toHaveLength(2000);
    // Through the stream they would take 80 XADDs per process; only the calls made before a process connected use it.
    expect((await streamAdds()) - addsBefore).toBeLessThan(40);

    const counts = countByRequestId(readEntries(dir));
    expect(counts.size).toBe(2000);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    await stopChild(writer.proc);
    const report = await verifyAuditLog(dir, TEST_AUDIT_KEY);
    expect(report.breaks).toEqual([]);
    expect(report.files.reduce((n, f) => n + f.entries, 0)).toBe(2000);
  });

  it('the writer killed mid-load: calls in flight fail, the processes carry on with the standby, whose intake takes over the address; nothing acknowledged is lost or written twice', async () => {
    const dir = auditDir();
    const { writer: first, port, url } = await intakeWriter(dir, { AUDIT_WRITER_LEASE_SECONDS: '2' }); // the standby takes over within 2 s
    // The standby listens on the same port once it holds the lease (only the active writer's intake is open).
    const standby = startWriter(dir, { AUDIT_INTAKE_PORT: String(port) });
    await waitFor(() => standby.output().includes('standing by'), 20_000, 'the second writer to stand by');

    const recording = runRecorders(dir, 2, 1500, 4, { AUDIT_ACK_TIMEOUT_MS: '1500', AUDIT_WRITER_URL: url });
    await waitFor(() => readEntries(dir).length >= 300, 30_000, 'entries from the first writer');
    await stopChild(first.proc, 'SIGKILL');
    const byFirstWriter = readEntries(dir).length;

    const results = await recording;
    await waitFor(() => standby.output().includes('audit intake open'), 20_000, 'the standby to open its intake');
    const acknowledged = results.flatMap((r) => r.ok);
    expect(acknowledged.length).toBeGreaterThan(byFirstWriter);
    // The calls waiting on the killed writer could not be confirmed: refused, not assumed durable.
    expect(results.flatMap((r) => r.failed).length).toBeGreaterThan(0);
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '1500', AUDIT_WRITER_URL: url }) as NodeJS.ProcessEnv);
    const conn = createRedis(config, { name: 'test' });
    const audit = createAuditLog(config, conn, createLogger('direct-takeover-test', 'error'));
    await untilDirect(audit).finally(async () => {
      await audit.close();
      conn.disconnect();
    });
    await stopChild(standby.proc);
    const counts = countByRequestId(readEntries(dir));
    for (const id of acknowledged) expect(counts.get(id), id).toBe(1);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it("a direct entry stores its category's last stream id: a replay of the stream after a restart skips exactly what is in the file", async () => {
    const dir = auditDir();
    const client = redis.client();
    const json = (requestId: string) => JSON.stringify(toSubmittedEvent(event(requestId)));
    let streamed = '';
    await withWriter(dir, 2_000, async (writer) => {
      streamed = (await client.xadd(AUDIT_STREAM, '*', 'event', json('streamed')))!;
      await waitFor(() => readEntries(dir).length === 1, 20_000, 'the streamed event to be written');
      expect(await writer.sequenceDirect([toSubmittedEvent(event('handed-over')), null])).toEqual(['durable', 'refused']);
    });
    // As after a crash before the trim: the stream still holds the event the file already has.
    await client.del(AUDIT_STREAM);
    await client.xadd(AUDIT_STREAM, streamed, 'event', json('streamed'));
    await client.xadd(AUDIT_STREAM, '*', 'event', json('after-restart'));
    await withWriter(dir, 2_000, async () => {
      await waitFor(() => readEntries(dir).some((e) => e.requestId === 'after-restart'), 20_000, 'the new event to be written');
    });

    const entries = readEntries(dir);
    expect(entries.map((e) => e.requestId)).toEqual(['streamed', 'handed-over', 'after-restart']);
    expect(entries[1]!.streamId).toBe(streamed);
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('Redis restarted empty: the writer appends nothing until it holds the lease again in that Redis (its own clock is not enough)', async () => {
    const dir = auditDir();
    // A long lease: by its own clock the writer would still hold it for many seconds after the restart.
    await withWriter(dir, 30_000, async (writer) => {
      expect(await writer.sequenceDirect([toSubmittedEvent(event('before-restart'))])).toEqual(['durable']);
      await redis.stop();
      await redis.start(); // no AOF in the test server: it comes back empty, the lease key free for a standby
      let n = 0;
      await waitFor(async () => {
        if (!(await writer.sequenceDirect([toSubmittedEvent(event(`after-restart-${n}`))]).then(() => true, () => false))) return false;
        n += 1;
        return true;
      }, 20_000, 'the writer to append again');
      // It appended again only after taking the lease in the new Redis: the key is there, a standby could not take it.
      expect(await redis.client().get(AUDIT_LEASE_KEY)).toMatch(/^1:/);
    });
    expect(readEntries(dir).map((e) => e.requestId)).toEqual(['before-restart', 'after-restart-0']);
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('opens only with AUDIT_INTAKE_KEY: without it the writer says why once and processes use the stream; a key derived from the empty Redis password is refused', async () => {
    const dir = auditDir();
    const port = await freePort();
    const keyless = startWriter(dir, { AUDIT_INTAKE_PORT: String(port), AUDIT_INTAKE_KEY: '' });
    try {
      await waitFor(() => keyless.output().includes('audit writer lease acquired'), 20_000, 'the keyless writer to take its lease');
      expect(keyless.output()).toContain('audit intake not opened: AUDIT_INTAKE_KEY is not set');
      const results = await runRecorders(dir, 1, 20, 5, { AUDIT_ACK_TIMEOUT_MS: '20000', AUDIT_WRITER_URL: `tcp://127.0.0.1:${port}`, AUDIT_INTAKE_KEY: '' });
      expect(results[0]!.failed).toEqual([]);
      expect(await connectable(port)).toBe(false);
      expect(keyless.output().match(/audit intake not opened/g)).toHaveLength(1);
    } finally {
      await stopChild(keyless.proc);
    }

    // What the old derivation gave anyone when Redis has no password: HMAC("", label).
    const { writer, port: openPort } = await intakeWriter(auditDir());
    try {
      const forger = await intakeSession(openPort);
      const nonce = (await forger.line()).split(' ')[1]!;
      const emptyKey = createHmac('sha256', '').update('pulsevault audit intake v1').digest();
      forger.send(`AUTH ${authProof(emptyKey, nonce)}\n`);
      expect(await forger.line()).toBe('ERR auth');
      expect(await forger.line()).toBe('CLOSED');
      expect(() => intakeKey('')).toThrow();
    } finally {
      await stopChild(writer.proc);
    }
  });

  it('refuses a peer without the proof, a malformed line or an over-long one; a malformed event is refused alone; no nonce or proof in the log', async () => {
    const dir = auditDir();
    const { writer, port, key } = await intakeWriter(dir);
    try {
      const stranger = await intakeSession(port);
      const [greeting, nonce] = (await stranger.line()).split(' ');
      expect(greeting).toBe('PVAUDIT/1');
      stranger.send(`AUTH ${'0'.repeat(64)}\n`);
      expect(await stranger.line()).toBe('ERR auth');
      expect(await stranger.line()).toBe('CLOSED');

      const peer = await intakeSession(port);
      const peerNonce = (await peer.line()).split(' ')[1]!;
      const proof = authProof(key, peerNonce);
      peer.send(`AUTH ${proof}\n`);
      expect(await peer.line()).toBe('READY');
      // Free text where an anonymised address belongs, in an otherwise valid event: refused, never written.
      const phi = { ...toSubmittedEvent(event('phi-direct')), clientIp: 'Jane Doe DOB 1970-01-01 MRN 0012345' };
      peer.send(`1 ${JSON.stringify(phi)}\n2 ${JSON.stringify(toSubmittedEvent(event('raw-direct')))}\n`);
      const replies = [JSON.parse(await peer.line()) as DirectReply];
      if (replies[0]!.durable.length + replies[0]!.refused.length < 2) replies.push(JSON.parse(await peer.line()) as DirectReply);
      expect(replies.flatMap((r) => r.refused)).toEqual([1]);
      expect(replies.flatMap((r) => r.durable)).toEqual([2]);
      expect(readEntries(dir).map((e) => e.requestId)).toEqual(['raw-direct']);
      peer.send('x {"category":"access"}\n');
      expect(await peer.line()).toBe('ERR protocol');
      expect(await peer.line()).toBe('CLOSED');

      const flooder = await authenticatedSession(port, key);
      flooder.send('9'.repeat(70 * 1024));
      expect(await flooder.line()).toBe('ERR line_too_long');
      expect(await flooder.line()).toBe('CLOSED');

      for (const secret of [nonce!, peerNonce, proof]) expect(writer.output()).not.toContain(secret);
    } finally {
      await stopChild(writer.proc);
    }
  });

  it('a peer that sends 10,000 events in one write gets every answer (its reads paused past 4,096 unanswered, then resumed)', async () => {
    const dir = auditDir();
    const { writer, port, key } = await intakeWriter(dir);
    try {
      const peer = await authenticatedSession(port, key);
      const json = JSON.stringify(toSubmittedEvent(event('flood')));
      peer.send(Array.from({ length: 10_000 }, (_, i) => `${i + 1} ${json}\n`).join(''));
      const durable = new Set<number>();
      while (durable.size < 10_000) {
        const reply = JSON.parse(await peer.line()) as DirectReply;
        expect(reply.refused.length + reply.unavailable.length).toBe(0);
        for (const ref of reply.durable) durable.add(ref);
      }
      expect(Math.min(...durable)).toBe(1);
      expect(Math.max(...durable)).toBe(10_000);
      expect(readEntries(dir)).toHaveLength(10_000);
    } finally {
      await stopChild(writer.proc);
    }
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('bounds: 300 connections that never authenticate do not keep an authenticated one out; a half-closed one that never reads is ended', async () => {
    const dir = auditDir();
    const metricsPort = await freePort();
    const { writer, port, key } = await intakeWriter(dir, { AUDIT_METRICS_PORT: String(metricsPort) });
    const authenticated = async () => Number(/^pulsevault_audit_intake_connections(?:\{[^}]*\})? (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())?.[1]);
    const flood = await Promise.all(Array.from({ length: 300 }, () => intakeSession(port)));
    try {
      // Admitted at once, however many wait for their proof (the oldest of them are pushed out).
      const admitted = await authenticatedSession(port, key);
      admitted.send(`1 ${JSON.stringify(toSubmittedEvent(event('after-flood')))}\n`);
      expect((JSON.parse(await admitted.line()) as DirectReply).durable).toEqual([1]);
      expect(flood.filter((f) => f.closed()).length).toBeGreaterThanOrEqual(300 - 128);

      // FIN after a burst of events, never reading the replies: ended after a grace (and its stalled replies), not kept forever.
      const quitter = connect(port, '127.0.0.1');
      quitter.on('error', () => {});
      quitter.once('data', (greeting: Buffer) => {
        quitter.pause(); // never read again
        const nonce = greeting.toString().trim().split(' ')[1]!;
        // Malformed events: each is answered (refused), ~4 MB of replies that outgrow the socket buffers unread.
        quitter.end(`AUTH ${authProof(key, nonce)}\n${Array.from({ length: 500_000 }, (_, i) => `${i + 1} {}\n`).join('')}`);
      });
      await waitFor(async () => (await authenticated()) === 2, 20_000, 'the half-closed peer to be authenticated');
      await waitFor(async () => (await authenticated()) === 1, 30_000, 'the writer to end the half-closed connection');
      quitter.destroy();
    } finally {
      await stopChild(writer.proc);
    }
  });

  it('idle: a quiet authenticated connection is ended with BYE idle; its process reconnects for its next event, without a warning; a peer that ignores BYE is closed', async () => {
    const dir = auditDir();
    const metricsPort = await freePort();
    const { writer, port, key, url } = await intakeWriter(dir, { AUDIT_INTAKE_IDLE_SECONDS: '3', AUDIT_METRICS_PORT: String(metricsPort) });
    const metric = async (pattern: RegExp) => Number(pattern.exec(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())?.[1] ?? 0);
    const connections = () => metric(/^pulsevault_audit_intake_connections(?:\{[^}]*\})? (\d+)$/m);
    const logged: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line) as { level: number; msg: string }) });
    const config = loadConfig(baseEnv(dir, { AUDIT_WRITER_URL: url }));
    const conn = createRedis(config, { name: 'idle-test' });
    const audit = createAuditLog(config, conn, log);
    // A raw peer that never answers BYE: the writer closes it itself after its grace.
    const ignoring = await authenticatedSession(port, key);
    try {
      await waitFor(async () => (await connections()) === 2, 20_000, 'the process to connect directly');
      await audit.record(event('before-idle'));
      await waitFor(async () => (await connections()) === 0, 30_000, 'the writer to end the quiet connection');
      await audit.record(event('after-idle')); // through the stream while the new connection authenticates
      await waitFor(async () => (await connections()) === 1, 20_000, 'the process to connect again');
      await audit.record(event('reconnected'));
      expect(readEntries(dir).map((e) => e.requestId)).toEqual(expect.arrayContaining(['before-idle', 'after-idle', 'reconnected']));
      expect(await metric(/^pulsevault_audit_intake_rejected_connections_total\{reason="idle"[^}]*\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
      expect(logged.filter((l) => l.level >= 40).map((l) => l.msg)).toEqual([]);
      expect(await waitFor(() => (ignoring.closed() ? 'closed' : undefined), 30_000, 'BYE, then the writer closing the connection')).toBe('closed');
      expect(await ignoring.line()).toBe('BYE idle');
    } finally {
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('splits the wire into lines across any chunking, multi-byte characters included, and refuses a tail past 64 KiB', () => {
    const text = 'a é 1\n\n{"x":"日本"}\nlast\ntail';
    for (const size of [1, 2, 3, 7, 64]) {
      const splitter = new LineSplitter();
      const lines: string[] = [];
      for (let i = 0; i < text.length; i += size) expect(splitter.push(text.slice(i, i + size), (line) => lines.push(line))).toBe(true);
      expect(lines).toEqual(['a é 1', '', '{"x":"日本"}', 'last']);
    }
    const splitter = new LineSplitter();
    expect(splitter.push('x'.repeat(MAX_LINE_BYTES), () => {})).toBe(true);
    expect(splitter.push('x', () => {})).toBe(false);
  });

  it("Redis frozen: direct calls are acknowledged only while the writer's lease is valid, then refused (503); each acknowledged one is in the file", async () => {
    const dir = auditDir();
    const { writer, url } = await intakeWriter(dir, { AUDIT_WRITER_LEASE_SECONDS: '2' });
    const config = loadConfig(baseEnv(dir, { AUDIT_ACK_TIMEOUT_MS: '1500', REDIS_COMMAND_TIMEOUT_MS: '500', AUDIT_WRITER_URL: url }) as NodeJS.ProcessEnv);
    const conn = createRedis(config, { name: 'test' });
    conn.on('error', () => {});
    const audit = createAuditLog(config, conn, createLogger('direct-freeze-test', 'error'));
    try {
      await untilDirect(audit);
      redis.signal('SIGSTOP');
      const frozenAt = performance.now();
      const acknowledged: string[] = [];
      let refusal: unknown = null;
      for (let i = 0; !refusal && performance.now() - frozenAt < 15_000; i++) {
        await audit.record(event(`frozen-${i}`)).then(
          () => acknowledged.push(`frozen-${i}`),
          (err: unknown) => (refusal = err),
        );
      }
      const refusedAfter = performance.now() - frozenAt;
      redis.signal('SIGCONT');
      expect(refusal).toBeInstanceOf(AuditUnavailableError);
      expect(toHttpError(refusal).status).toBe(503);
      // The lease is 2 s: the writer appends no longer than its own clock says it holds it (the
      // bound adds the ack timeout and slack for a loaded machine, and is still below a 10 s lease).
      expect(refusedAfter).toBeLessThan(2_000 + 1_500 + 5_000);
      const counts = countByRequestId(readEntries(dir));
      for (const id of acknowledged) expect(counts.get(id), id).toBe(1);
      await waitFor(() => audit.record(event('after-thaw')).then(() => true, () => false), 30_000, 'record() to work again after Redis thaws');
    } finally {
      redis.signal('SIGCONT');
      await audit.close();
      conn.disconnect();
      await stopChild(writer.proc);
    }
    expect((await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });
});

/** Whether anything accepts a TCP connection on the port. */
function connectable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/** A raw connection to the intake: its lines in order, then `CLOSED`. */
async function intakeSession(port: number): Promise<{ line(): Promise<string>; send(text: string): void; closed(): boolean }> {
  const socket = connect(port, '127.0.0.1');
  socket.setEncoding('utf8');
  const lines: string[] = [];
  let carry = '';
  socket.on('data', (text: string) => {
    carry += text;
    for (let nl = carry.indexOf('\n'); nl !== -1; nl = carry.indexOf('\n')) {
      lines.push(carry.slice(0, nl));
      carry = carry.slice(nl + 1);
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => lines.push('CLOSED'));
  return {
    line: () => waitFor(() => lines.shift(), 10_000, 'a line from the audit intake'),
    send: (text) => void socket.write(text),
    closed: () => socket.destroyed || lines.includes('CLOSED'),
  };
}
