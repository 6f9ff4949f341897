/**
 * One contract for every Redis lock and lease (as tus-node-server runs one suite
 * against each of its lockers): the engine itself (shared/platform/redis-lease.ts)
 * and each user of it, against a real redis-server, each holder on its own
 * connection as separate replicas would be.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WriterLease } from '../shared/audit/lease.js';
import { AUDIT_FENCE_KEY, AUDIT_LEASE_KEY } from '../shared/audit/stream.js';
import type { Redis } from '../shared/platform/redis.js';
import { RedisLease } from '../shared/platform/redis-lease.js';
import { acquireLease, leaseKey } from '../shared/transcode/lease.js';
import { RedisLocker } from '../shared/uploads/locker.js';
import { MediaStore, metaLockKey } from '../shared/video/store.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

let server: TestRedis;
/** The test's own view of Redis (never a holder). */
let observer: Redis;
const closers: (() => Promise<void> | void)[] = [];
const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-lease-'));

beforeAll(async () => {
  server = await startRedis();
  observer = server.client();
});
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
  await server.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

interface Holder {
  release(): Promise<void>;
  /** True once the holder knows it lost the lease (only for users that keep theirs alive). */
  lost(): boolean;
  fence?: number;
}

interface LeaseUser {
  name: string;
  /** The TTL its holders use here. */
  ttlMs: number;
  key(id: string): string;
  /** A holder on its own connection: take the lease for `id` once, or null when it is taken. */
  replica(): { take(id: string): Promise<Holder | null> };
  /** Keeps a held lease alive past its TTL and notices losing it. */
  keepsAlive: boolean;
  fenced: boolean;
}

/**
 * The TTL of holders that keep their lease alive here. Each extends every third of it, so a
 * holder's event loop may stall for two thirds of it before the lease lapses: 2 s holds on a
 * 2-core machine running two suites at once (600 ms did not).
 */
const TTL_MS = 2_000;

const users: LeaseUser[] = [
  {
    name: 'RedisLease (the engine)',
    ttlMs: TTL_MS,
    key: (id) => `pulsevault:test:lease:${id}`,
    keepsAlive: true,
    fenced: true,
    replica() {
      const redis = server.client();
      return {
        async take(id) {
          const lease = new RedisLease(redis, `pulsevault:test:lease:${id}`, { ttlMs: TTL_MS, fenceKey: 'pulsevault:test:fence' });
          if (!(await lease.tryAcquire())) return null;
          let lost = false;
          lease.keepAlive(() => (lost = true));
          return { release: async () => void (await lease.release()), lost: () => lost, fence: lease.fence };
        },
      };
    },
  },
  {
    name: 'upload locker (shared/uploads/locker.ts)',
    ttlMs: TTL_MS,
    key: (id) => `pulsevault:lock:upload:${id}`,
    keepsAlive: true,
    fenced: false,
    replica() {
      const locker = new RedisLocker(server.client(), { ttlMs: TTL_MS });
      closers.push(() => locker.close());
      return {
        async take(id) {
          const lock = locker.newLock(id);
          let lost = false;
          if (!(await lock.acquire({ timeoutMs: 0, askRelease: false, onLost: () => (lost = true) }))) return null;
          return { release: () => lock.unlock(), lost: () => lost };
        },
      };
    },
  },
  {
    name: 'transcode lease (shared/transcode/lease.ts)',
    ttlMs: TTL_MS, // it beats every third of that, at most every 500 ms
    key: (id) => leaseKey(id),
    keepsAlive: true,
    fenced: false,
    replica() {
      const redis = server.client();
      return {
        async take(id) {
          const lease = await acquireLease(redis, id, TTL_MS);
          return lease && { release: () => lease.release(), lost: () => lease.lost.aborted };
        },
      };
    },
  },
  {
    name: 'audit writer lease (shared/audit/lease.ts)',
    ttlMs: TTL_MS,
    key: () => AUDIT_LEASE_KEY, // one writer for the whole system
    keepsAlive: true,
    fenced: true,
    replica() {
      const redis = server.client();
      return {
        async take() {
          const lease = new WriterLease(redis, TTL_MS, 100);
          if (!(await lease.tryAcquire())) return null;
          // The writer renews at every cycle; this stands in for its loop.
          let lost = false;
          const cycle = setInterval(() => void lease.renew().then((ok) => (lost ||= !ok)), 100);
          return {
            release: async () => {
              clearInterval(cycle);
              await lease.release();
            },
            lost: () => lost,
            fence: lease.fence,
          };
        },
      };
    },
  },
  {
    name: 'media store meta.json lock (shared/video/store.ts)',
    ttlMs: 10_000,
    key: (id) => metaLockKey(id),
    keepsAlive: false, // held only for one read-modify-write
    fenced: false,
    replica() {
      const store = new MediaStore(path.join(mediaRoot, 'videos'), server.client());
      return {
        async take(id) {
          const release = await store.lock(id, 0).catch((err: unknown) => {
            if ((err as { code?: string }).code === 'busy') return null;
            throw err;
          });
          return release && { release, lost: () => false };
        },
      };
    },
  },
];

describe.each(users)('lease contract: $name', (user) => {
  type Replica = ReturnType<LeaseUser['replica']>;
  let a: Replica;
  let b: Replica;
  beforeAll(() => {
    a = user.replica();
    b = user.replica();
  });
  // The audit lease is one key for everything: each test starts from it free.
  const fresh = async () => {
    const id = randomUUID();
    await observer.del(user.key(id));
    return id;
  };

  it('is exclusive across replicas, and free again for another once released', async () => {
    const id = await fresh();
    const first = await a.take(id);
    expect(first).not.toBeNull();
    expect(await b.take(id)).toBeNull();
    expect(await a.take(id)).toBeNull(); // also for a second holder in the same process
    await first!.release();
    expect(await observer.exists(user.key(id))).toBe(0);
    const second = await b.take(id);
    expect(second).not.toBeNull();
    await second!.release();
  });

  it('releases only its own: a lease that lapsed and was taken by another stays theirs', async () => {
    const id = await fresh();
    const holder = await a.take(id);
    await observer.set(user.key(id), 'another-holder', 'PX', 60_000);
    await holder!.release();
    expect(await observer.get(user.key(id))).toBe('another-holder');
    await observer.del(user.key(id));
  });

  it('lapses after its TTL when the holder is gone (crashed), and not before', async () => {
    const id = await fresh();
    // A crashed holder leaves only its key behind, with the TTL it last set.
    await observer.set(user.key(id), 'crashed-holder', 'PX', TTL_MS);
    expect(await b.take(id)).toBeNull();
    const taker = await waitFor(() => b.take(id), 30_000, 'the lapsed lease to be taken', 50);
    expect(await observer.get(user.key(id))).not.toBe('crashed-holder');
    await taker.release();
  });

  if (user.keepsAlive) {
    it('stays held past its TTL while its holder lives', async () => {
      const id = await fresh();
      const holder = await a.take(id);
      const until = Date.now() + 2 * user.ttlMs;
      await waitFor(async () => {
        expect(await b.take(id)).toBeNull();
        return Date.now() > until;
      }, 10 * user.ttlMs, 'two TTLs to pass', 100);
      expect(holder!.lost()).toBe(false);
      await holder!.release();
    });

    it('extends only its own: a holder whose key was taken notices and leaves the new key alone', async () => {
      const id = await fresh();
      const holder = await a.take(id);
      await observer.set(user.key(id), 'another-holder'); // no TTL: any PEXPIRE by the old holder would show
      await waitFor(() => holder!.lost(), 10 * user.ttlMs, 'the holder to notice its loss');
      expect(await observer.get(user.key(id))).toBe('another-holder');
      expect(await observer.pttl(user.key(id))).toBe(-1);
      await holder!.release();
      expect(await observer.get(user.key(id))).toBe('another-holder');
      await observer.del(user.key(id));
    });
  }

  if (user.fenced) {
    it('fences: every acquisition carries a larger number than the one before', async () => {
      const fences: number[] = [];
      for (const replica of [a, b, a]) {
        const id = await fresh();
        const holder = await replica.take(id);
        fences.push(holder!.fence!);
        await holder!.release();
      }
      expect(fences[1]).toBeGreaterThan(fences[0]!);
      expect(fences[2]).toBeGreaterThan(fences[1]!);
    });
  }
});

describe('RedisLease keep-alive', () => {
  it('presumes the lease lost once Redis has not confirmed it for a whole TTL (unreachable or frozen)', async () => {
    const own = await startRedis();
    try {
      const lease = new RedisLease(own.client(), `pulsevault:test:lease:${randomUUID()}`, { ttlMs: TTL_MS });
      expect(await lease.tryAcquire()).toBe(true);
      let lostAt = 0;
      lease.keepAlive(() => (lostAt = Date.now()));
      const stoppedAt = Date.now();
      await own.stop();
      await waitFor(() => lostAt, 10 * TTL_MS, 'the loss to be reported');
      // About one TTL after the last confirmation; a bound, not a timing, so it holds on a busy machine.
      expect(lostAt - stoppedAt).toBeLessThan(3 * TTL_MS);
      expect(lease.held).toBe(false);
    } finally {
      await own.close();
    }
  });

  it('audit writer: after a lost connection it appends again only once Redis confirms the holding, or takes a new one when the key is gone', async () => {
    await observer.del(AUDIT_LEASE_KEY);
    const lease = new WriterLease(server.client(), TTL_MS, 100);
    expect(await lease.tryAcquire()).toBe(true);
    const first = lease.fence;
    lease.suspend();
    expect(lease.canAppend()).toBe(false);
    // The key is still ours: confirmed, the same holding.
    expect(await lease.tryAcquire()).toBe(true);
    expect(lease.fence).toBe(first);
    expect(lease.canAppend()).toBe(true);
    // As after a Redis that came back empty: the holding is gone, a new one is taken.
    lease.suspend();
    await observer.del(AUDIT_LEASE_KEY);
    expect(await lease.tryAcquire()).toBe(true);
    expect(lease.fence).toBeGreaterThan(first);
    expect(lease.canAppend()).toBe(true);
    await lease.release();
  });

  it('uses the fence key it is given for the audit writer', async () => {
    const before = Number((await observer.get(AUDIT_FENCE_KEY)) ?? 0);
    await observer.del(AUDIT_LEASE_KEY);
    const lease = new WriterLease(server.client(), TTL_MS, 100);
    expect(await lease.tryAcquire()).toBe(true);
    expect(lease.fence).toBe(before + 1);
    expect((await observer.get(AUDIT_LEASE_KEY))!.startsWith(`${before + 1}:`)).toBe(true);
    await lease.release();
  });
});
