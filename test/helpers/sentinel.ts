/**
 * A real Redis Sentinel setup on loopback, private to one test file: one primary, two replicas
 * and three `redis-sentinel`s (quorum 2), with passwords on both, configured as k8s/redis-sentinel.yaml
 * runs them but with a short `down-after-milliseconds` so a killed primary is replaced in seconds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../services/devstack/supervisor.js';
import { startRedis, type TestRedis } from './redis.js';
import { waitFor } from './wait.js';

export const SENTINEL_MASTER = 'pulsevault';
const REDIS_PASSWORD = 'failover-test-redis-password';
const SENTINEL_PASSWORD = 'failover-test-sentinel-password';

export interface TestSentinels {
  /** The variables a PulseVault process connects through these Sentinels with. */
  env: Record<string, string>;
  /** The data nodes, the first one the initial primary. */
  nodes: TestRedis[];
  /** Port of the primary the Sentinels name now. */
  primaryPort(): Promise<number>;
  /** SIGKILL the current primary (no shutdown, no last write); resolves with its port. */
  killPrimary(): Promise<number>;
  /** Start the killed nodes again, empty: the Sentinels make them replicas of the primary; resolves once both replicas are in sync. */
  restartKilled(): Promise<void>;
  /** The data node serving on `port`. */
  node(port: number): TestRedis;
  close(): Promise<void>;
}

export async function startSentinels(o: { downAfterMs?: number; failoverTimeoutMs?: number } = {}): Promise<TestSentinels> {
  // Replicas accept no writes of their own; with fewer than one replica in sync a primary refuses writes (as in k8s/).
  const safety = ['--masterauth', REDIS_PASSWORD, '--min-replicas-to-write', '1', '--min-replicas-max-lag', '10'];
  const primary = await startRedis({ password: REDIS_PASSWORD, args: safety });
  const replicas = await Promise.all([0, 1].map(() => startRedis({ password: REDIS_PASSWORD, args: [...safety, '--replicaof', '127.0.0.1', String(primary.port)] })));
  const nodes = [primary, ...replicas];

  const dir = mkdtempSync(path.join(tmpdir(), 'pv-sentinel-'));
  const ports = await Promise.all([0, 1, 2].map(() => freePort()));
  const children: ChildProcess[] = ports.map((port, i) => {
    const conf = path.join(dir, `sentinel-${i}.conf`);
    // Sentinel rewrites its own config file (what it learnt about replicas and peers): one each.
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `requirepass ${SENTINEL_PASSWORD}`,
        `sentinel sentinel-pass ${SENTINEL_PASSWORD}`,
        `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${primary.port} 2`,
        `sentinel auth-pass ${SENTINEL_MASTER} ${REDIS_PASSWORD}`,
        `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${o.downAfterMs ?? 1_500}`,
        `sentinel failover-timeout ${SENTINEL_MASTER} ${o.failoverTimeoutMs ?? 10_000}`,
        `sentinel parallel-syncs ${SENTINEL_MASTER} 2`,
        '',
      ].join('\n'),
    );
    return spawn('redis-sentinel', [conf], { stdio: 'ignore' });
  });
  const sentinel = (port: number) => {
    const c = new Redis({ port, host: '127.0.0.1', password: SENTINEL_PASSWORD, lazyConnect: true, maxRetriesPerRequest: 1 });
    c.on('error', () => {});
    return c;
  };
  const clients = ports.map(sentinel);

  const masterInfo = async (c: Redis) => {
    const flat = (await c.call('SENTINEL', 'MASTER', SENTINEL_MASTER)) as string[];
    return Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]]] : [])));
  };
  const primaryPort = async () => {
    for (const c of clients) {
      try {
        const [, port] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER)) as [string, string];
        return Number(port);
      } catch {
        // this Sentinel is away: ask the next
      }
    }
    throw new Error('no Sentinel answers');
  };
  const replicasInSync = async () => {
    const port = await primaryPort();
    const c = nodes.find((n) => n.port === port)!.client();
    try {
      return ((await c.info('replication')).match(/state=online/g) ?? []).length === 2;
    } finally {
      c.disconnect();
    }
  };
  // Ready when every Sentinel knows both replicas and both other Sentinels (they find each other through hello messages).
  await waitFor(async () => {
    for (const c of clients) {
      const m = await masterInfo(c);
      if (m['num-slaves'] !== '2' || m['num-other-sentinels'] !== '2' || !/^master$/.test(m.flags ?? '')) return false;
    }
    // …and both replicas are in sync (min-replicas-to-write refuses writes until one is).
    return replicasInSync();
  }, 60_000, 'the Sentinels to know every replica and each other, the replicas in sync', 200);

  const killed: TestRedis[] = [];
  return {
    env: {
      REDIS_SENTINELS: ports.map((p) => `127.0.0.1:${p}`).join(','),
      REDIS_SENTINEL_NAME: SENTINEL_MASTER,
      REDIS_PASSWORD,
      REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
      // Unused while REDIS_SENTINELS is set; test helpers that talk to "the" Redis reach the initial primary with it.
      REDIS_URL: `redis://:${REDIS_PASSWORD}@127.0.0.1:${primary.port}`,
    },
    nodes,
    primaryPort,
    async killPrimary() {
      const port = await primaryPort();
      const node = nodes.find((n) => n.port === port)!;
      await node.kill();
      killed.push(node);
      return port;
    },
    async restartKilled() {
      for (const node of killed.splice(0)) await node.start();
      await waitFor(replicasInSync, 60_000, 'the restarted nodes to be replicas in sync', 200);
    },
    node: (port) => nodes.find((n) => n.port === port)!,
    async close() {
      for (const c of clients) c.disconnect();
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGTERM');
            }),
        ),
      );
      await Promise.all(nodes.map((n) => n.close()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
