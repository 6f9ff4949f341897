/**
 * Automatic catch-up of the PostgreSQL mirror after an outage.
 *
 * A meta.json write the mirror missed (failed, or skipped while paused) is
 * remembered in the Redis hash `pulsevault:mirror:pending`, videoId → a
 * generation that every miss increments. Every process that mirrors writes
 * also drains that hash, a bounded random sample per pass: it re-reads each
 * video's meta.json from disk (never the value that missed: the disk may be
 * newer), upserts them in one statement with the write path's `newer` guard,
 * deletes the rows of videos gone from disk, and only then removes each entry,
 * and only if its generation is still the one it read: a miss recorded while
 * the pass ran (after its disk read, maybe) keeps the entry for the next pass.
 * Every step is idempotent, so any number of replicas may drain at once. A
 * failed pass (database or Redis down) backs off exponentially, with jitter.
 *
 * With Redis down as well, a miss is only logged; the periodic reindex
 * (k8s/mirror/reindex-cronjob.yaml) repairs it.
 */
import type { Logger } from '../platform/log.js';
import type { MediaStore } from '../video/store.js';
import { gauge } from '../platform/metrics.js';
import type { Redis } from '../platform/redis.js';
import { errorCode, type MetadataMirror } from './mirror.js';
import { readAll } from './reconcile.js';
import { toRow } from './rows.js';

export const PENDING_KEY = 'pulsevault:mirror:pending';

/** Remove each given field only if it still holds the generation read (ARGV: field, generation, field, generation, …). */
const SETTLE_SCRIPT = `local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n`;

export interface CatchUpOptions {
  /** Videos per pass (one upsert statement). */
  batchSize?: number;
  /** Between passes while nothing failed (an empty pass is one Redis command). */
  intervalMs?: number;
  /** After the first failed pass; doubled after each further one, up to `maxBackoffMs`. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface CatchUpPass {
  /** Entries taken from the pending hash. */
  taken: number;
  /** Rows upserted from the disk's meta.json (changed or not). */
  mirrored: number;
  /** Rows deleted: the video is gone from disk. */
  deleted: number;
  /** Entries removed from the pending hash (the others were missed again meanwhile). */
  settled: number;
}

/** The catch-up whose hash the gauge reports: the one started last in this process (there is one in production). */
let reported: MirrorCatchUp | null = null;

export class MirrorCatchUp {
  private readonly batchSize: number;
  private readonly intervalMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private failedPasses = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly mirror: MetadataMirror,
    private readonly store: MediaStore,
    private readonly redis: Redis,
    private readonly log: Logger,
    options: CatchUpOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 100;
    this.intervalMs = options.intervalMs ?? 10_000;
    this.minBackoffMs = options.minBackoffMs ?? 1_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
  }

  /** Remember a write the mirror missed. Never throws: with Redis down too, the reindex CronJob repairs it. */
  async markPending(videoId: string): Promise<void> {
    try {
      await this.redis.hincrby(PENDING_KEY, videoId, 1);
    } catch (err) {
      this.log.warn({ videoId, code: errorCode(err) }, 'metadata mirror miss not recorded (Redis unavailable); the periodic reindex will repair it');
    }
  }

  /** Videos waiting to be re-mirrored. */
  pendingCount(): Promise<number> {
    return this.redis.hlen(PENDING_KEY);
  }

  /** One bounded pass; throws when the database or Redis fails (nothing is removed from the hash then). */
  async drain(): Promise<CatchUpPass> {
    // Random, so replicas draining at once mostly take different videos. Redis ≥ 6.2.
    const flat = ((await this.redis.hrandfield(PENDING_KEY, this.batchSize, 'WITHVALUES')) ?? []) as string[];
    const entries: [id: string, generation: string][] = [];
    for (let i = 0; i < flat.length; i += 2) entries.push([flat[i]!, flat[i + 1]!]);
    if (entries.length === 0) return { taken: 0, mirrored: 0, deleted: 0, settled: 0 };

    const reads = await readAll(this.store, entries.map(([id]) => id), 8, this.log);
    // An unreadable meta.json leaves its row as it is, as reindex does; its entry is settled all the same.
    const rows = reads.flatMap((r) => ('meta' in r ? [toRow(r.meta, this.mirror.withPhi)] : []));
    const gone = reads.flatMap((r) => ('missing' in r ? [r.id] : []));
    await this.mirror.upsert(rows, 'newer');
    const deleted = await this.mirror.remove(gone);
    const settled = (await this.redis.eval(SETTLE_SCRIPT, 1, PENDING_KEY, ...entries.flat())) as number;
    return { taken: entries.length, mirrored: rows.length, deleted, settled };
  }

  /** Drain in the background until `stop()`; also makes this the catch-up the pending gauge reports. */
  start(): void {
    reported = this;
    pendingGauge();
    this.schedule(this.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    if (reported === this) reported = null;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass();
    }, delayMs);
    this.timer.unref();
  }

  private async pass(): Promise<void> {
    let next = this.intervalMs;
    try {
      const pass = await this.drain();
      if (pass.taken > 0) this.log.info(pass, 'metadata mirror caught up on missed writes');
      if (this.failedPasses > 0) this.log.info({ failedPasses: this.failedPasses }, 'metadata mirror catch-up resumed');
      this.failedPasses = 0;
      // A full batch means more may be waiting: go on at once.
      if (pass.taken === this.batchSize) next = 0;
    } catch (err) {
      this.failedPasses++;
      // Logged once per outage; the pending gauge shows how far behind the mirror is.
      if (this.failedPasses === 1) this.log.warn({ code: errorCode(err) }, 'metadata mirror catch-up failed; retrying with backoff');
      const backoff = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** (this.failedPasses - 1));
      // Jitter, so replicas do not all retry at the same instant when the database returns.
      next = backoff / 2 + Math.random() * (backoff / 2);
    }
    this.schedule(next);
  }
}

function pendingGauge(): void {
  gauge({
    name: 'pulsevault_metadata_mirror_pending',
    help: 'Videos whose meta.json write the PostgreSQL mirror missed and the catch-up has not re-mirrored yet (Redis hash pulsevault:mirror:pending).',
    async collect() {
      const count = await reported?.pendingCount().catch(() => null);
      if (count !== undefined && count !== null) this.set(count);
    },
  });
}
