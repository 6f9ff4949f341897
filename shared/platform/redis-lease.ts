/**
 * The one Redis lease (lock) engine: every Redis lock and lease in PulseVault
 * (the upload locker, the transcode lease, the audit writer lease, the media
 * store's meta.json lock, the upload expiry sweep) is one of these.
 *
 * - A lease is a key holding its holder's random token, taken with
 *   `SET key token PX ttl NX`; it lapses on its own `ttl` after its holder
 *   stops extending it (crash, stall), and then another holder may take it.
 * - Only the holder extends it (compare-and-PEXPIRE) or gives it back
 *   (compare-and-DEL): a holder whose lease lapsed and was taken by another can
 *   never prolong or delete the new holder's.
 * - With a fence key, each acquisition INCRs a counter whose value leads the
 *   token: a larger fence is a later holder.
 * - With `replicas`, an acquisition or extension counts only once `WAIT` says that many replicas
 *   have it: Redis replicates asynchronously, and a failover to a replica that missed it would
 *   hand the lease (or an earlier expiry of it) to another holder while this one still trusts it.
 * - `keepAlive` extends it every third of the TTL and reports loss: the key gone
 *   or someone else's, or no confirmation from Redis for a whole TTL (unreachable
 *   or frozen: the lease may have lapsed meanwhile, so it must be presumed lost).
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from './redis.js';

const EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

export interface LeaseOptions {
  ttlMs: number;
  /** Counter INCRed at each acquisition attempt; its value is the holder's fence. */
  fenceKey?: string;
  /** Replicas that must confirm an acquisition or extension (WAIT) before it counts; 0 (default) = none. */
  replicas?: number;
}

/** An acquisition or extension Redis applied but fewer replicas than asked confirmed: not to be trusted yet. */
export class LeaseUnconfirmedError extends Error {
  constructor(key: string, confirmed: number, wanted: number) {
    super(`lease ${key}: ${confirmed} of ${wanted} replicas confirmed`);
    this.name = 'LeaseUnconfirmedError';
  }
}

export class RedisLease {
  private token: string | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  /** Fence of the current (or last) holding; 0 without a fence key. */
  fence = 0;

  constructor(
    private readonly redis: Redis,
    readonly key: string,
    private readonly options: LeaseOptions,
  ) {}

  get held(): boolean {
    return this.token !== null;
  }

  /** Try once; true when this holder now has the lease. Redis errors are thrown. */
  async tryAcquire(): Promise<boolean> {
    if (this.token) throw new Error(`lease ${this.key} is already held by this holder`);
    const fence = this.options.fenceKey ? await this.redis.incr(this.options.fenceKey) : 0;
    const token = `${fence}:${randomBytes(12).toString('hex')}`;
    if ((await this.redis.set(this.key, token, 'PX', this.options.ttlMs, 'NX')) !== 'OK') return false;
    try {
      await this.replicated();
    } catch (err) {
      // Ours on the primary only: give it back rather than hold what a failover may hand to another.
      await this.redis.eval(RELEASE, 1, this.key, token).catch(() => 0);
      throw err;
    }
    this.token = token;
    this.fence = fence;
    return true;
  }

  /**
   * Push the expiry a whole TTL ahead if the lease is still ours. false: it is gone or
   * someone else's (and no longer held here). Redis errors (and LeaseUnconfirmedError) are thrown: how long the lease
   * can still be trusted is the caller's call (keepAlive: one TTL since the last confirmation).
   */
  async extend(): Promise<boolean> {
    const token = this.token;
    if (!token) return false;
    const extended = await this.redis.eval(EXTEND, 1, this.key, token, String(this.options.ttlMs));
    if (extended === 1) {
      await this.replicated();
      return true;
    }
    if (this.token === token) this.token = null;
    return false;
  }

  /** Extend every `everyMs` until released; `onLost` (once) when the lease is lost (see the header). */
  keepAlive(onLost: () => void, everyMs = Math.floor(this.options.ttlMs / 3)): void {
    if (!this.token || this.heartbeat) return;
    let confirmedAt = Date.now();
    const timer = setInterval(() => {
      const lose = () => {
        if (this.heartbeat !== timer) return; // released (or lost) meanwhile
        this.drop();
        onLost();
      };
      if (Date.now() - confirmedAt >= this.options.ttlMs) return lose();
      const sentAt = Date.now();
      this.extend().then(
        (ok) => (ok ? (confirmedAt = sentAt) : lose()),
        () => undefined, // unreachable: the next beat decides by confirmedAt
      );
    }, everyMs);
    timer.unref();
    this.heartbeat = timer;
  }

  /** Give the lease back if it is still ours; true when it was. Never throws: an unreachable Redis lets it lapse on its own. */
  async release(): Promise<boolean> {
    const token = this.token;
    this.drop();
    if (!token) return false;
    return (await this.redis.eval(RELEASE, 1, this.key, token).catch(() => 0)) === 1;
  }

  /** WAIT covers every earlier write of this connection (the fence INCR too); bounded inside a TTL and the command deadline. */
  private async replicated(): Promise<void> {
    const wanted = this.options.replicas ?? 0;
    if (wanted === 0) return;
    const deadline = this.redis.options.commandTimeout ?? 2_000;
    const confirmed = await this.redis.wait(wanted, Math.max(1, Math.floor(Math.min(this.options.ttlMs / 4, deadline / 2))));
    if (confirmed < wanted) throw new LeaseUnconfirmedError(this.key, confirmed, wanted);
  }

  private drop(): void {
    this.token = null;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }
}

/**
 * Take a lease away from whoever holds it (a disposal stops the video's transcodes): the holder's
 * next extend finds it gone and its keepAlive reports the loss. Resolves with how many keys went.
 */
export async function revokeLeases(redis: Redis, keys: readonly string[]): Promise<number> {
  return keys.length === 0 ? 0 : redis.del(...keys);
}
