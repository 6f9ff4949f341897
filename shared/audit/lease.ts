/**
 * Single-writer lease: at most one audit writer appends at a time, also while a
 * rollout runs old and new writer pods side by side.
 *
 * A fenced Redis lease (shared/platform/redis-lease.ts): each acquisition INCRs
 * a fencing counter that becomes part of the token, so a holder that was paused
 * and lost the lease cannot renew it back. Shared files cannot check a fencing
 * token themselves, so the writer also fences itself: it appends only while its
 * own clock says the lease (counted on the monotonic clock from before the renew
 * request was sent) has more than `safetyMs` left, which covers one append +
 * fsync. A writer paused past its lease (GC, SIGSTOP, a frozen VM) finds it
 * expired on waking.
 *
 * A lost connection suspends the holding (suspend): Redis may restart empty,
 * its key free for a standby while our clock still counts, and the writer
 * appends without Redis (direct submission). So after any lost connection it
 * appends again only once Redis confirms the holding (tryAcquire extends it
 * when the key is still ours, else takes a new one).
 *
 * Replicated Redis (Sentinel): each acquisition and extension counts only once a
 * replica has it (WAIT), so the replica a failover promotes holds at least the
 * expiry this writer's clock counts from; a standby cannot take the lease there
 * earlier than this writer stops appending.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';
import { AUDIT_FENCE_KEY, AUDIT_LEASE_KEY } from './stream.js';

export class WriterLease {
  private lease: RedisLease;
  private validUntil = 0;
  /** Set when a connection to Redis was lost, until Redis confirms the holding again. */
  private suspended = false;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
    private readonly safetyMs: number,
    /** Replicas that must confirm each acquisition and extension (WAIT), so a failover cannot hand the lease on early. */
    private readonly replicas = 0,
  ) {
    this.lease = this.newHolding();
  }

  private newHolding(): RedisLease {
    return new RedisLease(this.redis, AUDIT_LEASE_KEY, { ttlMs: this.ttlMs, fenceKey: AUDIT_FENCE_KEY, replicas: this.replicas });
  }

  /** The generation of the current holding (a later holder has a larger one). */
  get fence(): number {
    return this.lease.fence;
  }

  /** Try once to take the lease (or to confirm a suspended or clock-expired holding); true when this process now holds it. */
  async tryAcquire(): Promise<boolean> {
    const started = performance.now();
    if (this.lease.held && (await this.lease.extend())) {
      // Still our key (it never lapsed: a lapsed key cannot come back with our token): nobody else can have held the lease meanwhile.
      this.suspended = false;
      this.validUntil = started + this.ttlMs;
      return true;
    }
    // A holding our own clock gave up on is forgotten, not released: its key lapses on its own.
    if (this.lease.held) this.lease = this.newHolding();
    this.suspended = false;
    if (!(await this.lease.tryAcquire())) return false;
    this.validUntil = started + this.ttlMs;
    return true;
  }

  /** A connection to Redis was lost: append nothing until tryAcquire has confirmed the holding. */
  suspend(): void {
    if (this.lease.held) this.suspended = true;
  }

  /** Extend the lease when less than half of it is left; false when it is lost (another writer may hold it). */
  async renew(): Promise<boolean> {
    if (!this.lease.held) return false;
    if (this.validUntil - performance.now() > this.ttlMs / 2) return true;
    const started = performance.now();
    try {
      if (!(await this.lease.extend())) return false;
      this.validUntil = started + this.ttlMs;
      return true;
    } catch {
      // Redis unreachable: the lease still holds until our own clock says otherwise.
      return this.canAppend();
    }
  }

  /** True while this process may append: it holds the lease, confirmed since any lost connection, with more than the safety margin left. */
  canAppend(): boolean {
    return this.lease.held && !this.suspended && this.validUntil - performance.now() > this.safetyMs;
  }

  async release(): Promise<void> {
    await this.lease.release();
  }
}
