import { randomUUID } from 'node:crypto';
import { ERRORS } from '@tus/server';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisLocker } from '../shared/uploads/locker.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

let redis: TestRedis;
const lockers: RedisLocker[] = [];

/** A locker on its own connection, as a separate replica would have. */
function replica(options: ConstructorParameters<typeof RedisLocker>[1] = {}): RedisLocker {
  const locker = new RedisLocker(new Redis(redis.url), { ttlMs: 600, acquireTimeoutMs: 5_000, ...options });
  lockers.push(locker);
  return locker;
}

const never = () => new AbortController().signal;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const l of lockers) {
    await l.close();
    l.redis.disconnect();
  }
  await redis.close();
});

describe('RedisLocker', () => {
  it('lets one holder in at a time across replicas, and the waiter in as soon as it is released', async () => {
    const [a, b] = [replica(), replica()];
    const id = randomUUID();
    const first = a.newLock(id);
    await first.lock(never(), () => {});
    const events: string[] = [];
    const second = b.newLock(id);
    const waiting = second.lock(never(), () => {}).then(() => events.push('b acquired'));
    // The waiter asks the holder to let go; here the holder finishes its work first.
    await waitFor(() => events.length === 0 && redis.client().get(`pulsevault:lock:upload:${id}`), 2_000, 'the lock key');
    events.push('a releasing');
    await first.unlock();
    await waiting;
    expect(events).toEqual(['a releasing', 'b acquired']);
    await second.unlock();
  });

  it('asks the holder to release (tus cancelReq) when another request wants the upload', async () => {
    const [a, b] = [replica(), replica()];
    const id = randomUUID();
    const holder = a.newLock(id);
    let asked = 0;
    await holder.lock(never(), () => {
      asked++;
      void holder.unlock(); // what tus does, after draining the request
    });
    const taker = b.newLock(id);
    await taker.lock(never(), () => {});
    expect(asked).toBeGreaterThanOrEqual(1);
    await taker.unlock();
  });

  it('takes over from a crashed holder once its lock expires (no refresh)', async () => {
    const b = replica({ ttlMs: 600 });
    const id = randomUUID();
    // A crashed replica leaves only its key behind, with the TTL it last refreshed.
    await redis.client().set(`pulsevault:lock:upload:${id}`, 'dead-holder', 'PX', 600);
    const lock = b.newLock(id);
    await lock.lock(never(), () => {});
    expect(await redis.client().get(`pulsevault:lock:upload:${id}`)).not.toBe('dead-holder');
    await lock.unlock();
    expect(await redis.client().exists(`pulsevault:lock:upload:${id}`)).toBe(0);
  });

  it('keeps a held lock alive past its TTL by refreshing it', async () => {
    const [a, b] = [replica({ ttlMs: 300 }), replica({ ttlMs: 300 })];
    const id = randomUUID();
    const holder = a.newLock(id);
    await holder.lock(never(), () => {});
    // Waiting politely for 5 TTLs: a holder that did not refresh would have lost it long before.
    const ok = await b.newLock(id).acquire({ timeoutMs: 1_500, askRelease: false });
    expect(ok).toBe(false);
    await holder.unlock();
  });

  it('times out with the tus lock error, and gives up when the request is aborted', async () => {
    // A long TTL: this test is about the waiter's timeout, not about refreshes keeping up on a loaded machine.
    const [a, b] = [replica({ ttlMs: 10_000 }), replica({ acquireTimeoutMs: 300 })];
    const id = randomUUID();
    const holder = a.newLock(id);
    await holder.acquire({ timeoutMs: 0, askRelease: false }); // ignores release requests
    await expect(b.newLock(id).lock(never(), () => {})).rejects.toBe(ERRORS.ERR_LOCK_TIMEOUT);
    const abort = new AbortController();
    const pending = replica().newLock(id).lock(abort.signal, () => {});
    abort.abort();
    await expect(pending).rejects.toBe(ERRORS.ERR_LOCK_TIMEOUT);
    expect(await b.newLock(id).tryLock()).toBe(false);
    await holder.unlock();
    expect(await b.newLock(id).tryLock()).toBe(true);
  });

  it('tells a holder whose lock was taken away (expired during a stall) to stop', async () => {
    const a = replica({ ttlMs: 300 });
    const id = randomUUID();
    let lost = false;
    const lock = a.newLock(id);
    await lock.acquire({ timeoutMs: 0, askRelease: false, onLost: () => (lost = true) });
    await redis.client().set(`pulsevault:lock:upload:${id}`, 'someone-else');
    await waitFor(() => lost, 3_000, 'onLost');
    await lock.unlock();
    // Unlock never deletes a lock that is no longer ours.
    expect(await redis.client().get(`pulsevault:lock:upload:${id}`)).toBe('someone-else');
  });

  it('reports Redis being away as 503 lock_unavailable', async () => {
    const dead = new RedisLocker(new Redis({ port: 1, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true }));
    dead.redis.on('error', () => {});
    await expect(dead.newLock(randomUUID()).lock(never(), () => {})).rejects.toMatchObject({ status: 503, code: 'lock_unavailable' });
    await dead.close();
  });
});
