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
import { AuditUnavailableError, createAuditLog, toSubmittedEvent } from '../shared/audit/client.js';
import type { AuditEntry } from '../shared/audit/entry.js';
import { AUDIT_ACK_CHANNEL, AUDIT_STREAM, decodeAck, type AckMessage } from '../shared/audit/stream.js';
import { verifyAuditLog } from '../shared/audit/verify.js';
import { loadConfig } from '../shared/platform/config.js';
import { toHttpError } from '../shared/platform/errors.js';
import { createLogger } from '../shared/platform/log.js';
import { createRedis } from '../shared/platform/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/stack.js';
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
  return { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, SECRETS_DIR: '/nonexistent', REDIS_URL: redis.url, AUDIT_DIR: dir, MEDIA_ROOT: path.dirname(dir), LOG_LEVEL: 'info', ...extra };
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
const categories = ['access', 'upload', 'transcode'];
const count = Number(process.env.COUNT);
const ok = [], failed = [];
let next = 0;
await Promise.all(Array.from({ length: Number(process.env.PARALLEL) }, async () => {
  while (next < count) {
    const n = next++;
    const requestId = 'w' + process.env.WORKER + '-' + n;
    try {
      await audit.record({ category: categories[n % 3], action: 'stream', outcome: 'granted', videoId: process.env.VIDEO, clientIp: '203.0.113.9', requestId });
      ok.push(requestId);
    } catch {
      failed.push(requestId);
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
    const writer = startWriter(dir);
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
  const event = (requestId: string) => ({ category: 'access' as const, action: 'stream', outcome: 'granted' as const, videoId: VIDEO, requestId });
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
      expect(elapsed).toBeLessThan(5_000);
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
