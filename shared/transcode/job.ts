/**
 * A transcode job's life, in one place: how it is queued (and the status move
 * that goes with it), how the parts of a fanned-out video are queued, how a job
 * is taken (due retries first, then a dead connector's jobs, then new ones within
 * the transcoders' free slots), and what each end of a delivery means — ack,
 * wait without spending an attempt, retry with back-off, dead letter — with the
 * audit action and the status move of each (OUTCOMES). The Redis mechanics are
 * queue.ts; who delivers a job to the transcoders is connector.ts; finalize,
 * the transcoder, the recovery pass and `pulsevault requeue` queue through here.
 *
 * Per delivery: 2xx → ack. 409 `transcode_in_progress` / 429 → another transcoder
 * is on it (a reclaimed job): wait and ask again, no attempt spent. 503, or no
 * connection to the gateway at all → nobody could try (no ready replica, a
 * rollout, the gateway restarting): back off and ask again, no attempt spent.
 * 507 `no_space` → the transcoder ran out of disk: back off (longer) and ask again,
 * no attempt spent, never `failed` for it — the disk is the operator's to free,
 * the video is not at fault (alert TranscodeWaitingForDiskSpace). Anything else —
 * 502 included, which is what a transcoder the job crashed looks like — → retry
 * later (meta.json `queued`), or after TRANSCODE_MAX_ATTEMPTS dead-letter it
 * (meta.json `failed` with the reason). A part of a fanned-out video (preview,
 * chunk, join) is retried alone and leaves the video `transcoding`; out of
 * attempts a chunk or the join fails the video (a preview does not: it only plays early).
 */
import type { AuditLog } from '../audit/client.js';
import type { AuditActionOf } from '../audit/actions.js';
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import { counter } from '../platform/metrics.js';
import type { Redis } from '../platform/redis.js';
import type { MediaStore } from '../video/store.js';
import { markFailed, markQueued, markRequeued, markRetrying } from '../video/state.js';
import { addJob, newJob, type EnqueueResult, type QueueEntry, type TranscodeJob, type TranscodePart, type TranscodeQueue } from './queue.js';

const MAX_RETRY_DELAY_MS = 15 * 60_000;
/** Longer than a read's BLOCK plus the capacity check, so it never lapses under a connector still reading. */
const DISPATCH_LEASE_MS = 10_000;
const READ_BLOCK_MS = 1_000;
const UNAVAILABLE_MAX_WAIT_MS = 30_000;
/** A full disk is freed by an operator or the retention sweep, not in seconds: ask again at most every 5 min. */
const NO_SPACE_MAX_WAIT_MS = 5 * 60_000;

/** Exponential back-off with jitter: base·2^(attempt−1), capped, times a random factor in [0.5, 1). */
export function retryDelayMs(baseSeconds: number, attempt: number, random = Math.random()): number {
  const ceiling = Math.min(baseSeconds * 1000 * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS);
  return Math.round(ceiling * (0.5 + random / 2));
}

// ---- queueing ----

export interface EnqueueOptions {
  /** When given, meta.json moves to `queued` (from uploaded, failed or transcoded) before the job is added. */
  store?: MediaStore;
  audit?: AuditLog;
  requestId?: string | null;
}

/**
 * Add a transcode job for `videoId` (requeue, recovery). Idempotent: a video
 * that already has a live job is not queued twice.
 */
export async function enqueueTranscode(redis: Redis, videoId: string, traceparent: string | null = null, options: EnqueueOptions = {}): Promise<EnqueueResult> {
  if (options.store) {
    const { moved } = await markRequeued(options.store, videoId);
    if (moved) await options.audit?.record({ category: 'transcode', action: 'transcode.queued', outcome: 'success', videoId, requestId: options.requestId ?? null });
  }
  return addJob(redis, newJob(videoId, traceparent));
}

/**
 * Finalize: a new video's first job, then its move to `queued` — in that order, so a
 * `queued` video always has a job; a crash between the two is finished by finalize's retry
 * (the job is not added twice). `afterEnqueue` is the crash tests' hook.
 */
export async function enqueueFirstTranscode(redis: Redis, store: MediaStore, videoId: string, traceparent: string | null, afterEnqueue?: () => void): Promise<void> {
  await addJob(redis, newJob(videoId, traceparent));
  afterEnqueue?.();
  await markQueued(store, videoId);
}

/**
 * A fanned-out video's parts: with chunks left to encode, the preview first (the first free
 * replica makes the video playable early while the others take the chunks), then those chunks;
 * with none left, straight to the join. Parts already queued are left alone; meta.json is not touched.
 */
export function enqueueFanOut(redis: Redis, parent: TranscodeJob, missingChunks: number[]): Promise<EnqueueResult[]> {
  const parts: TranscodePart[] = missingChunks.length > 0 ? [{ kind: 'preview' }, ...missingChunks.map((index) => ({ kind: 'chunk' as const, index }))] : [{ kind: 'join' }];
  return enqueueParts(redis, parent, parts);
}

/** The join, once the last chunk is on disk (whoever finds the set complete asks; the join is keyed by the video, so once). */
export async function enqueueJoin(redis: Redis, parent: TranscodeJob): Promise<void> {
  await enqueueParts(redis, parent, [{ kind: 'join' }]);
}

async function enqueueParts(redis: Redis, parent: TranscodeJob, parts: TranscodePart[]): Promise<EnqueueResult[]> {
  const results: EnqueueResult[] = [];
  for (const part of parts) results.push(await addJob(redis, { ...newJob(parent.videoId, parent.traceparent ?? null), part, traceId: parent.traceId }));
  return results;
}

// ---- delivery outcomes ----

/** What one delivery of a job to the transcoders came to. */
export type Delivery =
  | { kind: 'ok' }
  | { kind: 'busy' }
  | { kind: 'unavailable'; code: string }
  | { kind: 'no_space'; code: string }
  | { kind: 'failed'; code: string; status: number | null };

type StatusMove = 'retry' | 'fail';
/**
 * Each end of a delivery that is written down: its counter label, the audit action and the video's
 * status move. A part's retry moves nothing (its video goes on `transcoding`), nor does a preview's
 * failure (the chunks go on without it): see videoMove.
 */
export const OUTCOMES = {
  acked: { action: null, move: null },
  retried: { action: 'transcode.retry', move: 'retry' },
  waiting_for_space: { action: 'transcode.retry', move: 'retry' },
  dead_lettered: { action: 'transcode.failed', move: 'fail' },
} as const satisfies Record<string, { action: AuditActionOf<'transcode'> | null; move: StatusMove | null }>;
export type Outcome = keyof typeof OUTCOMES;

function videoMove(outcome: Outcome, job: TranscodeJob): StatusMove | null {
  const { move } = OUTCOMES[outcome];
  if (!job.part || move === null) return move;
  return move === 'fail' && job.part.kind !== 'preview' ? 'fail' : null;
}

const outcomes = counter({
  name: 'pulsevault_queue_jobs_total',
  help: 'Deliveries of transcode jobs the queue connector finished handling, by outcome (acked, retried, waiting_for_space, dead_lettered).',
  labelNames: ['outcome'] as const,
});

/** After a delivery: the job is settled (acked, scheduled, dead-lettered), or is to be delivered again after `ms`. */
export type Next = { kind: 'settled' } | { kind: 'again'; ms: number };

export interface JobLifeDeps {
  config: Config;
  queue: TranscodeQueue;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
}

/** The consumer's half of a job's life: taking jobs, keeping them, and deciding what each delivery means. */
export class JobLife {
  constructor(private readonly d: JobLifeDeps) {}

  get consumer(): string {
    return this.d.queue.consumer;
  }

  /** At start, and whenever Redis answers NOGROUP (it lost its data): the group again, from the stream's start. */
  ensureGroup(): Promise<void> {
    return this.d.queue.ensureGroup();
  }

  private get leaseMs(): number {
    return this.d.config.transcode.leaseSeconds * 1000;
  }

  /** How often the connector heartbeats its jobs: a few times per lease, so a live connector's job is never reclaimed. */
  get heartbeatEveryMs(): number {
    return Math.max(500, Math.floor(this.leaseMs / 3));
  }

  heartbeat(entryIds: string[]): Promise<void> {
    return this.d.queue.heartbeat(entryIds);
  }

  /**
   * Up to `free` jobs: due retries go back into the stream, then jobs of a connector that stopped
   * heartbeating (already counted in flight), then new ones — cluster-wide never more than the
   * transcoders' slots (`capacity`), counted and read under one lease so two connectors never both
   * count the same free slots. `full` when every slot is taken or another connector is dispatching.
   * `skip` filters out entries this connector is already on.
   */
  async take(free: number, capacity: () => Promise<number>, skip: (entryId: string) => boolean): Promise<QueueEntry[] | 'full'> {
    const { queue } = this.d;
    await queue.promoteDue();
    const reclaimed = (await queue.reclaim(this.leaseMs, free)).filter((e) => !skip(e.id));
    if (reclaimed.length > 0) return reclaimed;
    const dispatch = queue.dispatchLease(DISPATCH_LEASE_MS);
    if (!(await dispatch.tryAcquire())) return 'full';
    try {
      const slots = Math.min(free, (await capacity()) - (await queue.inFlight()));
      // An empty read has already waited its BLOCK: the caller loops straight back.
      return slots > 0 ? await queue.read(slots, READ_BLOCK_MS) : 'full';
    } finally {
      await dispatch.release().catch(() => false);
    }
  }

  /** A job whose body does not parse is dead-lettered at once: no transcoder could take it. */
  async malformed(entry: QueueEntry): Promise<void> {
    this.d.log.error({ entry: entry.id }, 'malformed job; dead-lettered');
    outcomes.inc({ outcome: 'dead_lettered' });
    await this.d.queue.deadLetter(entry, 'malformed_job');
  }

  /** `waits`: how many times this delivery has already been asked again without spending an attempt (1 for the first). */
  async settle(entry: QueueEntry & { job: TranscodeJob }, delivery: Delivery, waits: number): Promise<Next> {
    const { config, queue, log } = this.d;
    const { job } = entry;
    switch (delivery.kind) {
      case 'ok':
        await queue.ack(entry);
        outcomes.inc({ outcome: 'acked' });
        log.info({ videoId: job.videoId, attempt: job.attempt }, 'job done');
        return { kind: 'settled' };
      case 'busy':
        log.info({ videoId: job.videoId }, 'a transcoder is already on this video; waiting for it');
        return { kind: 'again', ms: this.leaseMs / 2 };
      case 'unavailable': {
        const ms = Math.min(retryDelayMs(config.transcode.retryBaseSeconds, waits), UNAVAILABLE_MAX_WAIT_MS);
        log.warn({ videoId: job.videoId, code: delivery.code, waits, retryInMs: ms }, 'no transcoder could take the job; asking again, no attempt spent');
        return { kind: 'again', ms };
      }
      case 'no_space': {
        const ms = Math.min(retryDelayMs(config.transcode.retryBaseSeconds, waits), NO_SPACE_MAX_WAIT_MS);
        await this.record('waiting_for_space', job, delivery.code, `${delivery.code} (waiting for disk space, attempt ${job.attempt} not spent)`);
        log.error({ videoId: job.videoId, part: job.part ?? null, waits, retryInMs: ms }, 'the transcoder ran out of disk space; asking again, no attempt spent');
        return { kind: 'again', ms };
      }
      case 'failed':
        await this.fail(entry, delivery);
        return { kind: 'settled' };
    }
  }

  /**
   * Audit first: if that fails the entry stays pending, is taken over after the
   * lease and tried again with the same attempt number — nothing is lost unaudited.
   */
  private async fail(entry: QueueEntry & { job: TranscodeJob }, failure: { code: string; status: number | null }): Promise<void> {
    const { config, queue, log } = this.d;
    const { job } = entry;
    const last = job.attempt >= config.transcode.maxAttempts;
    const reason = failure.code;
    const detail = `${reason} (${failure.status ? `HTTP ${failure.status}, ` : ''}attempt ${job.attempt} of ${config.transcode.maxAttempts})`;
    await this.record(last ? 'dead_lettered' : 'retried', job, reason, detail, async () => {
      if (last) {
        await queue.deadLetter(entry, reason);
        log.error({ videoId: job.videoId, part: job.part ?? null, attempts: job.attempt, reason }, 'transcode failed for good; dead-lettered');
      } else {
        const delay = retryDelayMs(config.transcode.retryBaseSeconds, job.attempt);
        await queue.retryLater(entry, { ...job, attempt: job.attempt + 1 }, delay);
        log.warn({ videoId: job.videoId, part: job.part ?? null, attempt: job.attempt, reason, retryInMs: delay }, 'transcode failed; retry scheduled');
      }
    });
  }

  /** The outcome's audit entry, then what the queue does (`apply`), then its count and the video's status move (OUTCOMES). */
  private async record(outcome: Outcome, job: TranscodeJob, reason: string, detail: string, apply?: () => Promise<void>): Promise<void> {
    const { store, audit, log } = this.d;
    const { action } = OUTCOMES[outcome];
    if (action) await audit.record({ category: 'transcode', action, outcome: 'failure', reason, videoId: job.videoId });
    await apply?.();
    outcomes.inc({ outcome });
    const move = videoMove(outcome, job);
    if (!move) return;
    const part = job.part ? `${job.part.kind === 'chunk' ? `chunk ${job.part.index}` : job.part.kind}: ` : '';
    await (move === 'fail' ? markFailed : markRetrying)(store, job.videoId, `${part}${detail}`).catch((err: unknown) =>
      log.warn({ videoId: job.videoId, err: (err as Error).message }, 'could not record the failure in meta.json'),
    );
  }
}
