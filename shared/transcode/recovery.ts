/**
 * Healing after Redis lost its data (restarted without persistence, a failover
 * to an empty replica, a FLUSHALL): the stream, its consumer group and every
 * job are gone, while meta.json — the source of truth — still says `queued` or
 * `transcoding`.
 *
 * An epoch key marks "this Redis holds PulseVault's state". A connector that
 * finds it missing sets a new one (SET NX: one replica wins, the loss is
 * counted once) — Redis came back empty. A marker holds the epoch whose
 * recovery pass completed; while it lags, a connector holding the recovery
 * lease recreates the consumer group and requeues every video the disk says
 * waits for a transcode, auditing each re-created job (`transcode.requeued`,
 * reason `redis_data_lost`). A pass cut short (its replica killed, an error)
 * leaves the marker behind, so another connector runs it again; a second pass
 * adds nothing already queued. A brand-new Redis looks just like an emptied
 * one: its first pass finds nothing waiting, or heals what the last one lost.
 *
 * A failover loses less, and silently: Redis replicates asynchronously, so the
 * promoted replica can miss the last writes the old primary acknowledged (a job
 * finalize enqueued, an ack) while the epoch key, written long before, survives.
 * So the marker also holds the primary's replication id (INFO `master_replid`,
 * new on every promotion and restart): a pass runs after each failover as well,
 * and re-creates only what the disk says waits and Redis has no job for.
 */
import { randomUUID } from 'node:crypto';
import type { AuditLog } from '../audit/client.js';
import { exists } from '../platform/exists.js';
import type { Logger } from '../platform/log.js';
import { counter } from '../platform/metrics.js';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';
import type { MediaStore } from '../video/store.js';
import type { TranscodeQueue } from './queue.js';
import { requeueVideos } from './requeue.js';

export const REDIS_EPOCH_KEY = 'pulsevault:redis:epoch';
export const RECOVERED_EPOCH_KEY = 'pulsevault:transcode:recovered-epoch';
const RECOVERY_LEASE_KEY = 'pulsevault:transcode:recovery-lease';
export const RECOVERY_AUDIT_REASON = 'redis_data_lost';

const losses = () => counter({ name: 'pulsevault_redis_data_loss_total', help: 'Times a queue connector found Redis without PulseVault state: it lost its data (restart without persistence, failover, flush), or is new.' });
const requeued = () => counter({ name: 'pulsevault_transcode_recovered_jobs_total', help: 'Transcode jobs re-created from meta.json after Redis lost its data.' });

export interface RecoveryDeps {
  redis: Redis;
  queue: TranscodeQueue;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
  /** Lifetime of the recovery lease when its holder dies (renewed while the pass runs). */
  leaseMs: number;
}

export class QueueRecovery {
  private pass: Promise<void> | null = null;

  constructor(private readonly d: RecoveryDeps) {}

  /** Two GETs and an INFO when nothing is to do: call it often. A needed pass runs in the background. */
  async check(): Promise<void> {
    if (this.pass) return;
    const { redis, queue } = this.d;
    const epoch = `${await this.epoch()}/${await this.replicationId()}`;
    if ((await redis.get(RECOVERED_EPOCH_KEY)) === epoch) return;
    await queue.ensureGroup();
    const lease = new RedisLease(redis, RECOVERY_LEASE_KEY, { ttlMs: this.d.leaseMs });
    if (!(await lease.tryAcquire())) return; // another connector is on it
    // Losing it only lets another connector scan too: harmless (enqueue is idempotent), so the pass goes on.
    lease.keepAlive(() => this.d.log.warn('queue recovery lease lost; another connector may scan too'));
    this.pass = this.recover(epoch)
      .catch((err: unknown) => this.d.log.error({ err }, 'queue recovery pass failed; it runs again'))
      .finally(() => {
        this.pass = null;
        // Redis away: the lease lapses by itself.
        return lease.release().catch(() => undefined);
      });
  }

  /** Resolves when a running pass has ended (shutdown, tests). */
  async idle(): Promise<void> {
    await this.pass;
  }

  /** The primary's replication id: a failover (or a restart) changes it. */
  private async replicationId(): Promise<string> {
    return /^master_replid:(\w+)/m.exec(await this.d.redis.info('replication'))?.[1] ?? 'unknown';
  }

  private async epoch(): Promise<string> {
    const { redis, log } = this.d;
    const current = await redis.get(REDIS_EPOCH_KEY);
    if (current) return current;
    const fresh = randomUUID();
    if ((await redis.set(REDIS_EPOCH_KEY, fresh, 'NX')) === 'OK') {
      losses().inc();
      // Info, not a warning: a new Redis is normal; the pass warns when it finds jobs that were lost.
      log.info('Redis holds no PulseVault state (it lost its data, or is new): recovering the transcode queue from meta.json');
      return fresh;
    }
    return (await redis.get(REDIS_EPOCH_KEY)) ?? fresh;
  }

  private async recover(epoch: string): Promise<void> {
    const { redis, store, audit, log } = this.d;
    // A fresh volume has no videos/ until the first finalize: nothing waits (`pulsevault requeue` still refuses a missing one).
    const counts = (await exists(store.videoDir))
      ? await requeueVideos({ redis, store, audit, log }, { select: 'waiting', auditReason: RECOVERY_AUDIT_REASON })
      : { scanned: 0, enqueued: 0, alreadyQueued: 0, upToDate: 0, noMeta: 0, errors: 0 };
    requeued().inc(counts.enqueued);
    if (counts.errors > 0) {
      log.warn(counts, 'queue recovery pass incomplete; it runs again');
      return;
    }
    await redis.set(RECOVERED_EPOCH_KEY, epoch);
    log[counts.enqueued > 0 ? 'warn' : 'info'](counts, 'queue recovery pass done: every video waiting for a transcode has a job');
  }
}
