/**
 * The transcoder's KEDA trigger, evaluated as KEDA's redis-streams scaler would on a real Redis
 * holding real queue state: the metric counts running jobs as well as waiting ones, so the
 * replica count never falls below the transcodes in flight.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { parseAllDocuments } from 'yaml';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueueTranscode, TRANSCODE_GROUP, TRANSCODE_STREAM, TranscodeQueue } from '../shared/transcode/queue.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

type Trigger = { type: string; metadata: Record<string, string> };
const trigger = (parseAllDocuments(readFileSync(path.join('k8s', 'keda', 'transcoder-scaledobject.yaml'), 'utf8')).map((d) => d.toJS()).find((d) => d?.kind === 'ScaledObject')!.spec.triggers as Trigger[])[0]!;

/**
 * KEDA's redis-streams scaler (kedacore/keda pkg/scalers/redis_streams_scaler.go): with a
 * consumerGroup it reports XINFO GROUPS lag (lagCount set) or XPENDING's count; without
 * one, XLEN (streamLength). The HPA then wants ceil(metric / target) replicas.
 */
async function kedaDesiredReplicas(redis: Redis, t: Trigger): Promise<number> {
  const { stream, consumerGroup, lagCount, pendingEntriesCount, streamLength } = t.metadata;
  let metric: number;
  let target: number;
  if (consumerGroup && lagCount) {
    const groups = (await redis.xinfo('GROUPS', stream!)) as unknown[][];
    const g = groups.find((x) => x[x.indexOf('name') + 1] === consumerGroup)!;
    [metric, target] = [Number(g[g.indexOf('lag') + 1]), Number(lagCount)];
  } else if (consumerGroup) {
    [metric, target] = [Number(((await redis.xpending(stream!, consumerGroup)) as unknown[])[0]), Number(pendingEntriesCount ?? 5)];
  } else {
    [metric, target] = [await redis.xlen(stream!), Number(streamLength ?? 5)];
  }
  return Math.ceil(metric / target);
}

let server: TestRedis;
let redis: Redis;
beforeAll(async () => {
  server = await startRedis();
  redis = server.client();
});
afterAll(async () => server?.close());

describe('transcoder autoscaling metric (k8s/keda)', () => {
  it('is the stream of shared/transcode/queue.ts', () => {
    expect(trigger.type).toBe('redis-streams');
    expect(trigger.metadata.stream).toBe(TRANSCODE_STREAM);
  });

  it('wants a replica per waiting and per running job, and keeps the running ones when nothing waits', async () => {
    const queue = new TranscodeQueue(redis, server.client(), 'connector-a');
    await queue.ensureGroup();
    for (let i = 0; i < 3; i++) expect((await enqueueTranscode(redis, randomUUID())).enqueued).toBe(true);
    expect(await kedaDesiredReplicas(redis, trigger)).toBe(3);

    // All three handed out to transcoders: nothing waits, three run.
    const running = await queue.read(3, 100);
    expect(running).toHaveLength(3);
    expect(await kedaDesiredReplicas(redis, trigger)).toBe(3);
    // The lagCount mode this replaces would have scaled to zero extra replicas under three running jobs.
    expect(await kedaDesiredReplicas(redis, { type: 'redis-streams', metadata: { stream: TRANSCODE_STREAM, consumerGroup: TRANSCODE_GROUP, lagCount: '1' } })).toBe(0);

    // One finishes: one replica may go, two stay.
    await queue.ack(running[0]!);
    expect(await kedaDesiredReplicas(redis, trigger)).toBe(2);
  });
});
