/**
 * k8s/ settings that act on Redis, on a real redis-server holding real queue state:
 * - the transcoder's KEDA trigger, evaluated as KEDA's redis-streams scaler would: it counts
 *   running jobs as well as waiting ones, so the replica count never falls below the
 *   transcodes in flight;
 * - Redis at its memory limit (k8s/redis.yaml: maxmemory below the container limit,
 *   noeviction): writes are refused with a clear error and nothing stored is lost; once memory
 *   is freed (or the limit raised), writes go through again.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRANSCODE_GROUP, TRANSCODE_STREAM, TranscodeQueue } from '../shared/transcode/queue.js';
import { enqueueTranscode } from '../shared/transcode/job.js';
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

describe('Redis memory limit', () => {
  it('k8s/redis.yaml sets maxmemory below the container memory limit, with noeviction', () => {
    const container = docs.find((d) => d?.kind === 'StatefulSet')!.spec.template.spec.containers.find((c: { name: string }) => c.name === 'redis');
    expect(setting('maxmemory-policy')).toBe('noeviction');
    expect(bytes(setting('maxmemory')!)).toBeLessThanOrEqual(0.8 * bytes(container.resources.limits.memory as string));
  });

  it('at the limit a write is refused with an OOM error and nothing stored is lost', async () => {
    await redis.flushall(); // start from an empty queue (the KEDA tests above share this server)
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

describe('Redis HA (k8s/redis-sentinel)', () => {
  const ha = parseAllDocuments(readFileSync('k8s/redis-sentinel/redis-sentinel.yaml', 'utf8')).map((d) => d.toJS());
  const haConfig = ha.find((d) => d?.kind === 'ConfigMap')!.data as Record<string, string>;
  const haSetting = (file: string, name: string) => new RegExp(`^${name} (.+)$`, 'm').exec(haConfig[file]!)?.[1];
  const sts = ha.find((d) => d?.kind === 'StatefulSet')!;
  const sentinelKeda = parseAllDocuments(readFileSync('k8s/redis-sentinel/keda/transcoder-scaledobject.yaml', 'utf8')).map((d) => d.toJS());
  const haTrigger = sentinelKeda.find((d) => d?.kind === 'ScaledObject')!.spec.triggers[0] as Trigger & { authenticationRef: { name: string } };

  it('three pods, one per node, each a Redis and a Sentinel; quorum 2 of 3 and a primary that refuses writes without a replica', () => {
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey).toBe('kubernetes.io/hostname');
    expect(sts.spec.template.spec.containers.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['redis', 'sentinel']));
    expect(haConfig['init.sh']).toContain("printf 'sentinel monitor pulsevault %s 6379 2\\n'");
    expect(haSetting('redis.conf', 'min-replicas-to-write')).toBe('1');
    expect(haSetting('redis.conf', 'appendonly')).toBe('yes');
    expect(haSetting('redis.conf', 'maxmemory-policy')).toBe(setting('maxmemory-policy'));
    // Detection well inside the audit writer lease (AUDIT_WRITER_LEASE_SECONDS default 10 s).
    expect(Number(haSetting('sentinel.conf', 'sentinel down-after-milliseconds pulsevault'))).toBeLessThan(10_000);
  });

  it('the KEDA trigger asks the same Sentinels for the same stream, with both passwords', () => {
    expect(haTrigger.type).toBe('redis-sentinel-streams');
    expect(haTrigger.metadata.stream).toBe(TRANSCODE_STREAM);
    expect(haTrigger.metadata.sentinelMaster).toBe('pulsevault');
    const pods = haTrigger.metadata.addresses!.split(',');
    expect(pods).toEqual([0, 1, 2].map((i) => `${sts.metadata.name}-${i}.${sts.spec.serviceName}.${sts.metadata.namespace}.svc.cluster.local:26379`));
    // Only XLEN mode (no consumerGroup): the same metric as k8s/keda.
    expect(haTrigger.metadata.consumerGroup).toBeUndefined();
    expect(haTrigger.metadata.streamLength).toBe(trigger.metadata.streamLength);
    const auth = sentinelKeda.find((d) => d?.kind === 'TriggerAuthentication')!;
    expect(auth.metadata.name).toBe(haTrigger.authenticationRef.name);
    expect(auth.spec.secretTargetRef.map((r: { parameter: string; name: string }) => `${r.parameter}=${r.name}`).sort()).toEqual(['password=redis-password', 'sentinelPassword=redis-sentinel-password']);
  });

  it('the Sentinel port is open to PulseVault, the pods themselves and KEDA; the pods call only each other and DNS', () => {
    const [policy] = parseAllDocuments(readFileSync('k8s/redis-sentinel/network-policies.yaml', 'utf8')).map((d) => d.toJS());
    expect(policy.spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/name': sts.spec.template.metadata.labels['app.kubernetes.io/name'] });
    const clients = policy.spec.ingress[0];
    expect(clients.ports.map((p: { port: number }) => p.port)).toEqual([6379, 26379]);
    const froms = clients.from.map((f: object) => JSON.stringify(f));
    for (const peer of [{ 'pulsevault.io/redis-client': 'true' }, { 'pulsevault.io/media-volume': 'true' }, { 'app.kubernetes.io/name': 'redis-ha' }]) expect(froms).toContain(JSON.stringify({ podSelector: { matchLabels: peer } }));
    expect(froms).toContain(JSON.stringify({ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'keda' } } }));
    expect(policy.spec.egress.map((e: { ports: { port: number }[] }) => e.ports.map((p) => p.port))).toEqual([[6379, 26379], [53, 53]]);
  });
});
