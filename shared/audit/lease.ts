/**
 * Single-writer lease: at most one audit writer appends at a time, also while a
 * rollout runs old and new writer pods side by side.
 *
 * The lease is a Redis key holding the holder's token, taken with SET NX PX and
 * renewed only by compare-and-extend. Each acquisition INCRs a fencing counter
 * that becomes part of the token, so a holder that was paused and lost the lease
 * cannot renew it back. Shared files cannot check a fencing token themselves, so
 * the writer also fences itself: it appends only while its own clock says the
 * lease (counted on the monotonic clock from before the renew request was sent)
 * has more than `safetyMs` left, which covers one append + fsync. A writer
 * paused past its lease (GC, SIGSTOP, a frozen VM) finds it expired on waking.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Redis } from '../platform/redis.js';
import { AUDIT_FENCE_KEY, AUDIT_LEASE_KEY } from './stream.js';

const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

export class WriterLease {
  private token: string | null = null;
  private validUntil = 0;
  fence = 0;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
    private readonly safetyMs: number,
  ) {}

  /** Try once to take the lease; true when this process now holds it. */
  async tryAcquire(): Promise<boolean> {
    const started = performance.now();
    const fence = await this.redis.incr(AUDIT_FENCE_KEY);
    const token = `${fence}:${process.pid}:${randomBytes(8).toString('hex')}`;
    const ok = await this.redis.set(AUDIT_LEASE_KEY, token, 'PX', this.ttlMs, 'NX');
    if (ok !== 'OK') return false;
    this.token = token;
    this.fence = fence;
    this.validUntil = started + this.ttlMs;
    return true;
  }

  /** Extend the lease when less than half of it is left; false when it is lost (another writer may hold it). */
  async renew(): Promise<boolean> {
    if (!this.token) return false;
    if (this.validUntil - performance.now() > this.ttlMs / 2) return true;
    const started = performance.now();
    try {
      const extended = await this.redis.eval(EXTEND, 1, AUDIT_LEASE_KEY, this.token, String(this.ttlMs));
      if (extended === 1) {
        this.validUntil = started + this.ttlMs;
        return true;
      }
      this.token = null;
      return false;
    } catch {
      // Redis unreachable: the lease still holds until our own clock says otherwise.
      return this.canAppend();
    }
  }

  /** True while this process may append: it holds the lease with more than the safety margin left. */
  canAppend(): boolean {
    return this.token !== null && this.validUntil - performance.now() > this.safetyMs;
  }

  async release(): Promise<void> {
    if (!this.token) return;
    const token = this.token;
    this.token = null;
    await this.redis.eval(RELEASE, 1, AUDIT_LEASE_KEY, token).catch(() => undefined);
  }
}
