/**
 * shared/platform/redis.ts through a real Sentinel setup (test/helpers/sentinel.ts): connections
 * follow a failover by themselves (request connections fail fast meanwhile, blocking readers
 * wait), and a lease that asks for replica confirmation (WAIT) only counts once a replica has it.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../shared/platform/config.js';
import { createRedis, isRedisUnavailable, redisAnswers, type Redis } from '../shared/platform/redis.js';
import { LeaseUnconfirmedError, RedisLease } from '../shared/platform/redis-lease.js';
import { startSentinels, type TestSentinels } from './helpers/sentinel.js';
import { waitFor } from './helpers/wait.js';

let sentinels: TestSentinels;
const connections: Redis[] = [];
/** The production default: a command deadline must outlast a loaded machine's stalls, or a healthy Redis reads as away. */
const COMMAND_TIMEOUT_MS = 2_000;
const config = () => loadConfig({ ...sentinels.env, REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS) }, { require: [], secretsDir: '/nonexistent' });
const connect = (name: string, blocking = false) => {
  const c = createRedis(config(), { name, blocking });
  connections.push(c);
  return c;
};

beforeAll(async () => {
  sentinels = await startSentinels();
}, 90_000);

afterAll(async () => {
  for (const c of connections) c.disconnect();
  await sentinels?.close();
});

it('answers through the Sentinels, and not without their password', async () => {
  expect(await redisAnswers(config().redis)).toBe(true);
  const wrong = loadConfig({ ...sentinels.env, REDIS_SENTINEL_PASSWORD: 'not-the-password' }, { require: [], secretsDir: '/nonexistent' });
  expect(await redisAnswers(wrong.redis)).toBe(false);
});

it('a lease asking for more replicas than confirm it is not held, and its key is given back', async () => {
  const redis = connect('lease');
  const confirmed = new RedisLease(redis, 'test:lease:one', { ttlMs: 4_000, replicas: 1 });
  expect(await confirmed.tryAcquire()).toBe(true);
  expect(await confirmed.extend()).toBe(true);
  const tooMany = new RedisLease(redis, 'test:lease:three', { ttlMs: 4_000, replicas: 3 });
  await expect(tooMany.tryAcquire()).rejects.toBeInstanceOf(LeaseUnconfirmedError);
  expect(tooMany.held).toBe(false);
  expect(await redis.exists('test:lease:three')).toBe(0);
});

it('follows a failover: requests fail fast as unavailable meanwhile, then reach the new primary; a blocking reader resumes', async () => {
  const redis = connect('requests');
  const reader = connect('reader', true);
  // Replicated, so the promoted replica has it. Polled: on a loaded machine the first command (the Sentinel
  // lookup and connect come first) or a WAIT can outlast this connection's deadline.
  await waitFor(async () => (await redis.set('test:before', 'kept')) === 'OK' && (await redis.wait(2, 400)) === 2, 30_000, 'the write before the kill to reach both replicas', 100);
  // As the audit writer reads: XREAD BLOCK from the last id seen, issued again when it ends empty. (A blocking
  // command ioredis ends empty client-side can still run on the server after the reconnect and its reply is
  // dropped; harmless for a read from an id or an XREADGROUP, whose entries stay pending until XACK — never
  // a destructive pop, which PulseVault does not use.)
  const waiting = waitFor(async () => ((await reader.xread('BLOCK', 1_000, 'STREAMS', 'test:stream', '0-0')) as [string, [string, string[]][]][] | null)?.[0]?.[1], 60_000, 'the blocking reader to get the entry', 0);
  const killed = await sentinels.killPrimary();
  const killedAt = Date.now();

  // Every command answers within its deadline and the one retry (and slack), with a result or "unavailable".
  const failures: unknown[] = [];
  await waitFor(async () => {
    const started = Date.now();
    try {
      await redis.set('test:after', 'written');
      return true;
    } catch (err) {
      expect(Date.now() - started).toBeLessThan(4 * COMMAND_TIMEOUT_MS);
      if (!isRedisUnavailable(err)) failures.push(err);
      return false;
    }
  }, 60_000, 'a write to reach the new primary', 100);
  expect(failures).toEqual([]);
  expect(await sentinels.primaryPort()).not.toBe(killed);
  console.log(`redis-sentinel: first write on the new primary ${Date.now() - killedAt} ms after the kill`);
  expect(await redis.get('test:before')).toBe('kept');
  const id = await redis.xadd('test:stream', '*', 'hello', 'world');
  expect(await waiting).toEqual([[id, ['hello', 'world']]]);
});
