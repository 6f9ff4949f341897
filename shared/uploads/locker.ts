/**
 * A Redis-backed implementation of @tus/server's `Locker`, so several tus-upload
 * (and finalize) replicas on one volume never write one upload at the same time.
 *
 * - A lock is a lease of shared/platform/redis-lease.ts; the holder extends it
 *   every ttl/3, so a crashed holder blocks an upload for at most `ttl`.
 * - A waiter publishes a release request on the upload's channel; the holder hands
 *   it to tus (`cancelReq`), which ends the old request after `lockDrainTimeout`.
 *   This is how a client that reconnects takes over its own half-open PATCH.
 * - Unlock deletes the key only if it is still ours (compare-and-delete) and
 *   publishes `released`, waking waiters at once; waiters also poll, in case the
 *   holder died without a word.
 * - A holder that finds its key gone or taken (expired while Redis or the process
 *   stalled), or cannot get it confirmed for a whole ttl, is told through
 *   `onLost`, and stops.
 */
import { randomBytes } from 'node:crypto';
import { ERRORS, type Lock, type Locker, type RequestRelease } from '@tus/server';
import { ServiceUnavailableError } from '../platform/errors.js';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';

export interface RedisLockerOptions {
  /** Lifetime of a lock its holder no longer refreshes. */
  ttlMs?: number;
  /** How long tus requests wait for a lock before failing. */
  acquireTimeoutMs?: number;
  /** Poll interval while waiting (release notices are only a shortcut). */
  retryMs?: number;
  keyPrefix?: string;
}

export interface AcquireOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Ask the current holder to let go (tus requests do; finalize waits politely). */
  askRelease: boolean;
  /** Another request asked this holder to release the lock. */
  onReleaseRequested?: () => void;
  /** The lock expired or was taken while held: stop writing. */
  onLost?: () => void;
}

/** Redis could not be reached to take or give back a lock. */
export class LockUnavailableError extends ServiceUnavailableError {
  constructor() {
    super('the upload lock service (Redis) is unavailable; retry', 'lock_unavailable');
  }
}

type Listener = (message: string) => void;

export class RedisLocker implements Locker {
  readonly ttlMs: number;
  readonly acquireTimeoutMs: number;
  readonly retryMs: number;
  readonly keyPrefix: string;
  private readonly subscriber: Redis;
  private readonly channels = new Map<string, { listeners: Set<Listener>; ready: Promise<unknown> }>();

  constructor(
    readonly redis: Redis,
    options: RedisLockerOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? 30_000;
    this.retryMs = options.retryMs ?? Math.min(250, Math.ceil(this.ttlMs / 4));
    this.keyPrefix = options.keyPrefix ?? 'pulsevault:lock:upload:';
    // Pub/sub needs a connection of its own.
    this.subscriber = redis.duplicate({ connectionName: `${redis.options.connectionName ?? 'pulsevault'}:locks` });
    this.subscriber.on('error', () => {}); // ioredis reconnects; lock calls on `redis` report outages
    this.subscriber.on('message', (channel: string, message: string) => {
      for (const listener of this.channels.get(channel)?.listeners ?? []) listener(message);
    });
  }

  newLock(id: string): RedisLock {
    return new RedisLock(this, id);
  }

  /** Subscribe `listener` to `channel` (one SUBSCRIBE per channel per process); returns the unsubscribe. */
  async listen(channel: string, listener: Listener): Promise<() => void> {
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = { listeners: new Set(), ready: this.subscriber.subscribe(channel) };
      this.channels.set(channel, entry);
    }
    entry.listeners.add(listener);
    const current = entry;
    try {
      await current.ready;
    } catch {
      // The next listener on this channel must not inherit a failed SUBSCRIBE.
      if (this.channels.get(channel) === current) this.channels.delete(channel);
      throw new LockUnavailableError();
    }
    return () => {
      current.listeners.delete(listener);
      if (current.listeners.size === 0 && this.channels.get(channel) === current) {
        this.channels.delete(channel);
        this.subscriber.unsubscribe(channel).catch(() => undefined);
      }
    };
  }

  async close(): Promise<void> {
    this.channels.clear();
    this.subscriber.disconnect();
  }
}

export class RedisLock implements Lock {
  private lease: RedisLease | null = null;
  /** Names this holder's release requests (so it ignores its own) and its release notice. */
  private requester = '';
  private stopListening: (() => void) | null = null;
  private readonly key: string;
  private readonly channel: string;

  constructor(
    private readonly locker: RedisLocker,
    readonly id: string,
  ) {
    this.key = `${locker.keyPrefix}${id}`;
    this.channel = `${locker.keyPrefix}${id}:events`;
  }

  /** The tus contract: wait (asking the holder to let go), give up with ERR_LOCK_TIMEOUT. */
  async lock(signal: AbortSignal, cancelReq: RequestRelease): Promise<void> {
    const ok = await this.acquire({
      timeoutMs: this.locker.acquireTimeoutMs,
      signal,
      askRelease: true,
      onReleaseRequested: () => void cancelReq(),
      onLost: () => void cancelReq(),
    });
    if (!ok) throw ERRORS.ERR_LOCK_TIMEOUT;
  }

  /** Take the lock only if it is free right now (the expiry sweep never waits for a busy upload). */
  async tryLock(): Promise<boolean> {
    return this.acquire({ timeoutMs: 0, askRelease: false });
  }

  /** Wait up to `timeoutMs` for the lock; false on timeout or abort. */
  async acquire(o: AcquireOptions): Promise<boolean> {
    if (this.lease) throw new Error(`lock ${this.id} is already held by this object`);
    const redis = this.locker.redis;
    const lease = new RedisLease(redis, this.key, { ttlMs: this.locker.ttlMs });
    const requester = randomBytes(16).toString('hex');
    let wake: (() => void) | null = null;
    // Listen before trying, so a release notice sent between our SET and our wait is not missed.
    const stopListening = await this.locker.listen(this.channel, (message) => {
      const [kind, from] = message.split(':');
      if (kind === 'released') wake?.();
      else if (kind === 'release' && this.lease === lease && from !== requester) o.onReleaseRequested?.();
    });
    const deadline = Date.now() + o.timeoutMs;
    let askedAt = 0;
    try {
      for (;;) {
        if (o.signal?.aborted) return this.giveUp(stopListening);
        if (await lease.tryAcquire()) break;
        const now = Date.now();
        if (now >= deadline) return this.giveUp(stopListening);
        if (o.askRelease && now - askedAt >= 1_000) {
          askedAt = now;
          await redis.publish(this.channel, `release:${requester}`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(this.locker.retryMs, deadline - now));
          o.signal?.addEventListener('abort', done, { once: true });
          wake = done;
          function done() {
            clearTimeout(timer);
            o.signal?.removeEventListener('abort', done);
            resolve();
          }
        });
        wake = null;
      }
    } catch {
      stopListening();
      throw new LockUnavailableError();
    }
    this.lease = lease;
    this.requester = requester;
    this.stopListening = stopListening;
    lease.keepAlive(() => o.onLost?.(), Math.max(10, Math.floor(this.locker.ttlMs / 3)));
    return true;
  }

  async unlock(): Promise<void> {
    const lease = this.lease;
    if (!lease) return; // never taken: nothing of ours to give back
    this.lease = null;
    this.stopListening?.();
    this.stopListening = null;
    await lease.release();
    await this.locker.redis.publish(this.channel, `released:${this.requester}`).catch(() => undefined);
  }

  private giveUp(stopListening: () => void): false {
    stopListening();
    return false;
  }
}
