/**
 * 6. Queue: latency from finalize's enqueue (the job's Redis stream entry id,
 *    stamped by Redis at XADD) to the transcoder starting it (meta.json
 *    `transcodeStartedAt`, written as it takes the job), p50 and p99, one job
 *    at a time so no job waits behind another's transcode. Reference: the bare
 *    Redis Streams hop on the same Redis, XADD → a consumer blocked in
 *    XREADGROUP.
 */
import path from 'node:path';
import { loadConfig } from '../../../shared/platform/config.js';
import { createRedis, type Redis } from '../../../shared/platform/redis.js';
import { activeKey } from '../../../shared/transcode/queue.js';
import type { BenchContext } from '../context.js';
import { makeClip } from '../media.js';
import { percentile, type Row } from '../table.js';
import { waitForStatus } from '../videos.js';

/** Milliseconds since the epoch of a stream entry id (`<ms>-<seq>`). */
const entryTime = (id: string) => Number(id.split('-')[0]);

async function pulsevaultLatencies(ctx: BenchContext, redis: Redis, jobs: number, clip: string): Promise<{ latencies: number[]; lost: number }> {
  const latencies: number[] = [];
  let lost = 0;
  for (let i = 0; i < jobs; i++) {
    const uploadId = await ctx.stack.upload(clip, ctx.sizes.chunkBytes);
    const videoId = await ctx.stack.finalize(uploadId, 'queue.mp4');
    const entry = await redis.get(activeKey(videoId));
    const meta = await waitForStatus(ctx.stack.videoDir, videoId, ['transcoded'], 120_000);
    if (!entry || typeof meta.transcodeStartedAt !== 'string') lost += 1;
    else latencies.push(Date.parse(meta.transcodeStartedAt) - entryTime(entry));
  }
  return { latencies, lost };
}

async function streamsLatencies(redisUrl: string, jobs: number): Promise<number[]> {
  const key = 'bench:queue-reference';
  const config = loadConfig({ REDIS_URL: redisUrl }, { require: [] });
  const producer = createRedis(config, { name: 'bench-queue-reference' });
  const consumer = createRedis(config, { name: 'bench-queue-reference:read', blocking: true });
  try {
    await producer.xgroup('CREATE', key, 'bench', '$', 'MKSTREAM');
    const latencies: number[] = [];
    for (let i = 0; i < jobs; i++) {
      const read = consumer.xreadgroup('GROUP', 'bench', 'c1', 'COUNT', 1, 'BLOCK', 0, 'STREAMS', key, '>') as Promise<[string, [string, string[]][]][] | null>;
      const started = performance.now();
      await producer.xadd(key, '*', 'job', JSON.stringify({ i }));
      const reply = await read;
      latencies.push(performance.now() - started);
      await producer.xack(key, 'bench', reply![0]![1][0]![0]);
    }
    await producer.del(key);
    return latencies;
  } finally {
    producer.disconnect();
    consumer.disconnect();
  }
}

export async function benchQueue(ctx: BenchContext): Promise<Row[]> {
  const { stack, sizes } = ctx;
  const jobs = sizes.queueJobs;
  const clip = path.join(ctx.scratch, 'queue-clip.mp4');
  await makeClip(clip, { seconds: 1, width: 320, height: 180, fps: 25 });
  const redis = createRedis(loadConfig({ REDIS_URL: stack.redisUrl }, { require: [] }), { name: 'bench-queue' });
  let pv;
  try {
    ctx.progress(`6. queue: ${jobs} jobs, one at a time`);
    pv = await pulsevaultLatencies(ctx, redis, jobs, clip);
  } finally {
    redis.disconnect();
  }
  ctx.progress('6. reference: XADD → XREADGROUP');
  const ref = await streamsLatencies(stack.redisUrl, jobs);
  const sample = `${pv.latencies.length} jobs${jobs < 200 ? ` (quick mode: ${jobs}; --full runs 200)` : ''}${pv.lost ? `, ${pv.lost} without a readable entry id or start time` : ''}; 1 s 320x180 clip per job, each transcoded before the next is finalized${pv.latencies.length < 100 ? '; with under 100 samples p99 is the maximum' : ''}`;
  const commands = [
    'per job: tus upload + POST /uploads/finalize; GET pulsevault:transcode:active:<videoId> (the stream entry id) right after; wait for transcoded; latency = meta.transcodeStartedAt − entry id time',
    `reference: XGROUP CREATE bench:queue-reference bench $ MKSTREAM; per job XADD on one connection while another waits in XREADGROUP GROUP bench c1 COUNT 1 BLOCK 0 (scripts/bench/scenarios/queue.ts)`,
  ];
  const row = (p: number): Row => ({
    scenario: `6. Queue latency finalize → transcoder start, p${p}`,
    pulsevault: pv.latencies.length ? { value: percentile(pv.latencies, p), unit: 'ms' } : null,
    reference: { value: percentile(ref, p), unit: 'ms' },
    referenceName: 'bare Redis Streams XADD → XREADGROUP',
    better: 'lower',
    commands,
    note: sample,
  });
  return [row(50), row(99)];
}
