/**
 * The queue recovery pass over a real Redis (killed without persistence and
 * restarted empty) and the real audit writer: two connectors notice, one pass
 * re-creates exactly the jobs meta.json says are waiting, each audited once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AuditLog } from '../shared/audit/client.js';
import { createLogger, type Logger } from '../shared/platform/log.js';
import type { Redis } from '../shared/platform/redis.js';
import { TRANSCODE_GROUP, TRANSCODE_STREAM, TranscodeQueue } from '../shared/transcode/queue.js';
import { QueueRecovery, RECOVERED_EPOCH_KEY, RECOVERY_AUDIT_REASON } from '../shared/transcode/recovery.js';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { readAuditEntries } from './helpers/audit.js';
import type { TestRedis } from './helpers/redis.js';
import { startTranscoder, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-recovery-'));
let harness: TranscoderHarness;
let server: TestRedis;
let redis: Redis;
let store: MediaStore;
let audit: AuditLog;

beforeAll(async () => {
  harness = await startTranscoder(mediaRoot);
  ({ server, redis, store } = harness);
  audit = harness.deps.audit;
});

afterAll(async () => {
  await harness?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

/** Two connector replicas' recovery, checked at the same moment; resolves when any pass has ended. */
async function checkOnTwoReplicas(): Promise<void> {
  const log = createLogger('test', 'error');
  const replicas = ['a', 'b'].map((consumer) => new QueueRecovery({ redis, queue: new TranscodeQueue(redis, redis, consumer), store, audit, log, leaseMs: 5_000 }));
  await Promise.all(replicas.map((r) => r.check()));
  await Promise.all(replicas.map((r) => r.idle()));
}

async function jobsByVideo(): Promise<Map<string, number>> {
  const jobs = new Map<string, number>();
  for (const [, fields] of await redis.xrange(TRANSCODE_STREAM, '-', '+')) {
    const { videoId } = JSON.parse(fields[1]!) as { videoId: string };
    jobs.set(videoId, (jobs.get(videoId) ?? 0) + 1);
  }
  return jobs;
}

const requeuedAudits = () => readAuditEntries(path.join(mediaRoot, 'audit')).filter((e) => e.action === 'transcode.requeued');

it('re-creates one job per waiting video after Redis comes back empty, audited once, and only once per loss', async () => {
  const make = (status: VideoMeta['status'], n: number) => Promise.all(Array.from({ length: n }, () => addVideo(store, null, { status })));
  const waiting = [...(await make('queued', 3)), ...(await make('transcoding', 2))].map((v) => v.videoId).sort();
  const settled = await Promise.all([make('uploaded', 1), make('transcoded', 2), make('failed', 1)]);

  // A new Redis looks like an emptied one: the first pass already brings the waiting videos their jobs.
  await checkOnTwoReplicas();
  expect([...(await jobsByVideo()).entries()].sort()).toEqual(waiting.map((id) => [id, 1]));

  await server.kill();
  await server.start();
  await waitFor(async () => (await redis.ping()) === 'PONG', 10_000, 'the client to reconnect');
  expect(await redis.exists(TRANSCODE_STREAM, RECOVERED_EPOCH_KEY)).toBe(0);

  await checkOnTwoReplicas();
  expect([...(await jobsByVideo()).entries()].sort()).toEqual(waiting.map((id) => [id, 1]));
  const groups = (await redis.xinfo('GROUPS', TRANSCODE_STREAM)) as unknown[][];
  expect(groups.map((g) => g[g.indexOf('name') + 1])).toEqual([TRANSCODE_GROUP]);
  for (const v of settled.flat()) expect((await jobsByVideo()).has(v.videoId)).toBe(false);
  // Statuses are the disk's: a recovery pass changes none.
  for (const id of waiting) expect(['queued', 'transcoding']).toContain((await store.read(id)).status);

  // Checked again with nothing lost: no new job, no new entry.
  await checkOnTwoReplicas();
  expect([...(await jobsByVideo()).values()].every((n) => n === 1)).toBe(true);

  // One entry per video per loss (the new Redis, then the restart), none for the settled videos.
  const entries = await waitFor(() => {
    const e = requeuedAudits();
    return e.length >= waiting.length * 2 ? e : null;
  }, 10_000, 'the requeue audit entries');
  expect(entries).toHaveLength(waiting.length * 2);
  for (const e of entries) expect(e).toMatchObject({ category: 'transcode', outcome: 'success', reason: RECOVERY_AUDIT_REASON });
  expect(entries.map((e) => e.videoId).sort()).toEqual([...waiting, ...waiting].sort());
});

it('a fresh volume without videos/ is an empty one: the pass completes with one info line, no error', async () => {
  await redis.del(RECOVERED_EPOCH_KEY);
  const lines: { level: string; msg: string }[] = [];
  const log = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [level, (a: unknown, b?: unknown) => void lines.push({ level, msg: String(typeof a === 'string' ? a : b) })])) as unknown as Logger;
  const fresh = new MediaStore(path.join(mkdtempSync(path.join(tmpdir(), 'pv-recovery-fresh-')), 'videos'), redis);
  const recovery = new QueueRecovery({ redis, queue: new TranscodeQueue(redis, redis, 'fresh'), store: fresh, audit, log, leaseMs: 5_000 });
  await recovery.check();
  await recovery.idle();
  await recovery.check(); // recovered: nothing more to do, nothing more said
  await recovery.idle();
  expect(await redis.exists(RECOVERED_EPOCH_KEY)).toBe(1);
  expect(lines).toEqual([{ level: 'info', msg: 'queue recovery pass done: every video waiting for a transcode has a job' }]);
  rmSync(path.dirname(fresh.videoDir), { recursive: true, force: true });
});
