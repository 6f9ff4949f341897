/** The transcode queue on a real Redis: dedupe, take-over of idle jobs, heartbeats, retries, dead letters. */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Redis } from '../shared/platform/redis.js';
import { DEAD_LETTER_STREAM, TRANSCODE_GROUP, TRANSCODE_STREAM, TranscodeQueue, queueStats } from '../shared/transcode/queue.js';
import { enqueueTranscode, retryDelayMs } from '../shared/transcode/job.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

let server: TestRedis;
let redis: Redis;
const queue = (name: string) => new TranscodeQueue(redis, server.client(), name);

/** Idle time (ms) of a pending entry. */
async function idleMs(id: string): Promise<number> {
  const [row] = (await redis.xpending(TRANSCODE_STREAM, TRANSCODE_GROUP, id, id, 1)) as [string, string, number, number][];
  return Number(row?.[2] ?? -1);
}

beforeAll(async () => {
  server = await startRedis();
  redis = server.client();
});
afterAll(() => server.close());
beforeEach(async () => {
  await redis.flushall();
  await queue('setup').ensureGroup();
});

describe('transcode queue', () => {
  it('enqueues a video once while its job is live, again once it is acked', async () => {
    const videoId = randomUUID();
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const first = await enqueueTranscode(redis, videoId, traceparent);
    expect(first).toMatchObject({ enqueued: true, job: { videoId, attempt: 1, traceId: '0af7651916cd43dd8448eb211c80319c', traceparent } });
    expect((await enqueueTranscode(redis, videoId)).enqueued).toBe(false);
    const a = queue('a');
    const [entry] = await a.read(10, 100);
    expect(entry!.job).toEqual(first.job);
    expect((await enqueueTranscode(redis, videoId)).enqueued).toBe(false); // in flight
    await a.ack(entry!);
    expect(await redis.xlen(TRANSCODE_STREAM)).toBe(0);
    expect((await enqueueTranscode(redis, videoId)).enqueued).toBe(true);
  });

  it('lets another consumer take over a job only after its consumer stops heartbeating', async () => {
    await enqueueTranscode(redis, randomUUID());
    const a = queue('a');
    const b = queue('b');
    const [entry] = await a.read(1, 100);
    await waitFor(async () => (await idleMs(entry!.id)) >= 300, 5_000, 'the entry to idle');
    await a.heartbeat([entry!.id]);
    expect(await b.reclaim(300, 10)).toEqual([]);
    // b's heartbeat never touches a's entry.
    await b.heartbeat([entry!.id]);
    const stolen = await waitFor(async () => (await b.reclaim(300, 10))[0], 5_000, 'b to reclaim the idle entry');
    expect(stolen.id).toBe(entry!.id);
    expect(await queueStats(redis)).toMatchObject({ waiting: 0, inFlight: 1 });
  });

  it('schedules a retry out of the stream and brings it back when due', async () => {
    const videoId = randomUUID();
    await enqueueTranscode(redis, videoId);
    const a = queue('a');
    const [entry] = await a.read(1, 100);
    await a.retryLater(entry!, { ...entry!.job!, attempt: 2 }, 300);
    expect(await redis.xlen(TRANSCODE_STREAM)).toBe(0);
    expect(await queueStats(redis)).toMatchObject({ waiting: 1, inFlight: 0, delayed: 1 });
    expect((await enqueueTranscode(redis, videoId)).enqueued).toBe(false); // scheduled counts as live
    expect(await a.promoteDue()).toBe(0);
    await waitFor(async () => (await a.promoteDue()) === 1, 5_000, 'the retry to be due');
    const [again] = await a.read(1, 100);
    expect(again!.job).toMatchObject({ videoId, attempt: 2 });
  });

  it('dead-letters a job with its reason and malformed bodies too', async () => {
    const videoId = randomUUID();
    await enqueueTranscode(redis, videoId);
    await redis.xadd(TRANSCODE_STREAM, '*', 'job', '{"not":"a job"}');
    const a = queue('a');
    const entries = await a.read(10, 100);
    expect(entries.map((e) => e.job === null)).toEqual([false, true]);
    for (const e of entries) await a.deadLetter(e, e.job ? 'gave_up' : 'malformed_job');
    const dead = (await redis.xrange(DEAD_LETTER_STREAM, '-', '+')).map(([, f]) => JSON.parse(f[1]!) as Record<string, unknown>);
    expect(dead).toEqual([expect.objectContaining({ videoId, reason: 'gave_up' }), expect.objectContaining({ raw: '{"not":"a job"}', reason: 'malformed_job' })]);
    expect(await queueStats(redis)).toMatchObject({ waiting: 0, inFlight: 0, deadLettered: 2 });
    expect((await enqueueTranscode(redis, videoId)).enqueued).toBe(true);
  });

  it('backs off exponentially with jitter, capped', () => {
    expect([1, 2, 3, 4].map((n) => retryDelayMs(10, n, 0))).toEqual([5_000, 10_000, 20_000, 40_000]);
    expect(retryDelayMs(10, 1, 0.999)).toBeLessThan(10_000);
    expect(retryDelayMs(10, 30, 0.999)).toBeLessThanOrEqual(15 * 60_000);
  });
});
