/**
 * Redis at its memory limit (k8s/redis.yaml: maxmemory below the container limit, noeviction):
 * writes are refused with a clear error and nothing already stored is lost; once memory is
 * freed (or the limit raised), writes go through again.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueueTranscode, TRANSCODE_STREAM, TranscodeQueue } from '../shared/transcode/queue.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const docs = parseAllDocuments(readFileSync('k8s/redis.yaml', 'utf8')).map((d) => d.toJS());
const conf = docs.find((d) => d?.kind === 'ConfigMap')!.data['redis.conf'] as string;
const setting = (name: string) => new RegExp(`^${name} (\\S+)$`, 'm').exec(conf)?.[1];
const bytes = (v: string) => Number(/^(\d+)/.exec(v)![1]) * { '': 1, kb: 1e3, mb: 1e6, gb: 1e9, k: 1e3, m: 1e6, g: 1e9, ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3 }[v.replace(/^\d+/, '').toLowerCase()]!;

let server: TestRedis;
let redis: Redis;
beforeAll(async () => {
  server = await startRedis();
  redis = server.client();
});
afterAll(async () => server?.close());

describe('Redis memory limit', () => {
  it('k8s/redis.yaml sets maxmemory below the container memory limit, with noeviction', () => {
    const container = docs.find((d) => d?.kind === 'StatefulSet')!.spec.template.spec.containers.find((c: { name: string }) => c.name === 'redis');
    expect(setting('maxmemory-policy')).toBe('noeviction');
    expect(bytes(setting('maxmemory')!)).toBeLessThanOrEqual(0.8 * bytes(container.resources.limits.memory as string));
  });

  it('at the limit a write is refused with an OOM error and nothing stored is lost', async () => {
    const queue = new TranscodeQueue(redis, server.client(), 'connector-a');
    await queue.ensureGroup();
    const kept = randomUUID();
    expect((await enqueueTranscode(redis, kept)).enqueued).toBe(true);
    const used = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    await redis.config('SET', 'maxmemory-policy', 'noeviction');
    await redis.config('SET', 'maxmemory', String(used));
    // Fill past the limit: Redis refuses instead of growing or evicting.
    await expect(
      (async () => {
        for (let i = 0; i < 10_000; i++) await redis.set(`filler:${i}`, 'x'.repeat(1024));
      })(),
    ).rejects.toThrow(/OOM command not allowed when used memory > 'maxmemory'/);
    await expect(enqueueTranscode(redis, randomUUID())).rejects.toThrow(/OOM/);
    // The job queued before the limit is still there and is handed out.
    expect(await redis.xlen(TRANSCODE_STREAM)).toBe(1);
    const [entry] = await queue.read(1, 100);
    expect(entry?.job?.videoId).toBe(kept);
    // Memory freed (or the limit raised): writes go through again.
    await redis.config('SET', 'maxmemory', '0');
    expect((await enqueueTranscode(redis, randomUUID())).enqueued).toBe(true);
  });
});
