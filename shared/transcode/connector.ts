/**
 * The queue connector: reads transcode jobs from the Redis stream and invokes
 * every function subscribed to the `transcode` topic through the gateway, as an
 * OpenFaaS connector does — plus what OpenFaaS connectors lack: concurrency bounded
 * by the transcoders' slots (ready replicas × max_inflight, across all connectors via
 * the group's pending count; TRANSCODE_CONCURRENCY caps one connector), ack only after success, retries with exponential back-off and
 * jitter, a dead-letter stream, and take-over of a dead connector's jobs.
 *
 * Per job: 2xx → ack. 409 `transcode_in_progress` / 429 → another transcoder is
 * on it (a reclaimed job): wait and ask again, no attempt spent. 503, or no
 * connection to the gateway at all → nobody could try (no ready replica, a
 * rollout, the gateway restarting): back off and ask again, no attempt spent.
 * Anything else — 502 included, which is what a transcoder the job crashed
 * looks like — → retry later (meta.json `queued`), or after
 * TRANSCODE_MAX_ATTEMPTS dead-letter it (meta.json `failed` with the reason).
 * Both are audited. A part of a fanned-out video (preview, chunk, join) is retried
 * alone and leaves the video `transcoding`; out of attempts a chunk or the join
 * fails the video (a preview does not: it only plays early).
 *
 * Redis losing its data (NOGROUP, an emptied instance) is healed here too: the
 * group is recreated at once and the jobs meta.json says are waiting come back
 * through the recovery pass (shared/transcode/recovery.ts), checked every few seconds.
 */
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AuditLog } from '../audit/client.js';
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import type { MediaStore } from '../video/store.js';
import { markFailed, markRetrying } from '../video/state.js';
import { counter } from '../platform/metrics.js';
import { isMissingGroup, TRANSCODE_TOPIC, TranscodeQueue, type QueueEntry, type TranscodeJob } from './queue.js';
import type { QueueRecovery } from './recovery.js';
import type { SubscriberDirectory } from './subscribers.js';

export const CONNECTOR_NAME = 'pulsevault-queue-connector';
const MAX_RETRY_DELAY_MS = 15 * 60_000;
const READ_BLOCK_MS = 1_000;
/** Longer than a read's BLOCK plus the capacity check, so it never lapses under a connector still reading. */
const DISPATCH_LEASE_MS = 10_000;
const NO_SUBSCRIBER_WAIT_MS = 5_000;
/** How often a connector looks again while every transcoder slot is taken. */
const CAPACITY_RECHECK_MS = 1_000;
const UNAVAILABLE_MAX_WAIT_MS = 30_000;
/** How soon an emptied Redis is noticed (two GETs per check). */
const RECOVERY_CHECK_MS = 2_000;
/** Errors of a request that never reached the gateway. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

const outcomes = counter({
  name: 'pulsevault_queue_jobs_total',
  help: 'Jobs the queue connector finished handling, by outcome (acked, retried, dead_lettered).',
  labelNames: ['outcome'] as const,
});

export interface ConnectorDeps {
  config: Config;
  queue: TranscodeQueue;
  recovery: QueueRecovery;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
  directory: SubscriberDirectory;
}

/** A failed invocation: a lowercase code (the function's error code, or `http_<status>`, `unreachable`, …) and the HTTP status. */
interface Failure {
  code: string;
  status: number | null;
}
type Invocation = { kind: 'ok' } | { kind: 'busy' } | { kind: 'unavailable'; code: string } | ({ kind: 'failed' } & Failure) | { kind: 'aborted' };

/** Audit reasons are lowercase codes; anything else a function answers becomes `http_<status>`. */
const CODE = /^[a-z][a-z0-9._-]{0,63}$/;

/** Exponential back-off with jitter: base·2^(attempt−1), capped, times a random factor in [0.5, 1). */
export function retryDelayMs(baseSeconds: number, attempt: number, random = Math.random()): number {
  const ceiling = Math.min(baseSeconds * 1000 * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS);
  return Math.round(ceiling * (0.5 + random / 2));
}

/**
 * The HTTP timeout towards the gateway: longer than the transcoder's exec_timeout
 * (TRANSCODE_TIMEOUT_SECONDS), so the function's own deadline always answers first.
 */
export function invokeTimeoutMs(config: Config): number {
  return (config.transcode.timeoutSeconds + 60) * 1000;
}

/** Resolves after `ms` or on abort, whichever comes first; either way its abort listener goes (waits loop for the whole run). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

export class QueueConnector {
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  private wake: (() => void) | null = null;

  constructor(private readonly d: ConnectorDeps) {}

  /** Runs until stop(); resolves when the read loop has ended. */
  async run(): Promise<void> {
    const { config, queue, recovery, log } = this.d;
    const leaseMs = config.transcode.leaseSeconds * 1000;
    await queue.ensureGroup();
    const beat = setInterval(() => {
      queue.heartbeat([...this.inFlight.keys()]).catch((err: unknown) => log.warn({ err }, 'heartbeat failed'));
    }, Math.max(500, Math.floor(leaseMs / 3)));
    // A timer of its own: the read loop may sit waiting for a free slot for as long as a transcode lasts.
    const checkRecovery = () => void recovery.check().catch((err: unknown) => log.debug({ err: (err as Error).message }, 'queue recovery check failed'));
    checkRecovery();
    const recoveryTimer = setInterval(checkRecovery, RECOVERY_CHECK_MS);
    log.info({ consumer: queue.consumer, concurrency: config.transcode.concurrency, leaseSeconds: config.transcode.leaseSeconds }, 'queue connector started');
    try {
      while (!this.stopping.signal.aborted) {
        const free = config.transcode.concurrency - this.inFlight.size;
        if (free <= 0) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        try {
          await queue.promoteDue();
          // Jobs of a connector that stopped heartbeating first (already counted in the group's in-flight), then new ones.
          let entries = (await queue.reclaim(leaseMs, free)).filter((e) => !this.inFlight.has(e.id));
          if (entries.length === 0) {
            // Cluster-wide, not per connector: never more jobs handed out than the transcoders have slots. Counting
            // and reading happen under one lease, so two connectors never both count the same free slots.
            const dispatch = queue.dispatchLease(DISPATCH_LEASE_MS);
            if (!(await dispatch.tryAcquire())) {
              await sleep(CAPACITY_RECHECK_MS, this.stopping.signal);
              continue;
            }
            let slots: number;
            try {
              slots = Math.min(free, (await this.capacity()) - (await queue.inFlight()));
              // An empty read has already waited its BLOCK: loop straight back to it.
              if (slots > 0) entries = await queue.read(slots, READ_BLOCK_MS);
            } finally {
              await dispatch.release().catch(() => false);
            }
            if (slots <= 0) {
              await sleep(CAPACITY_RECHECK_MS, this.stopping.signal);
              continue;
            }
          }
          for (const entry of entries) this.start(entry);
        } catch (err) {
          if (this.stopping.signal.aborted) break;
          if (isMissingGroup(err)) {
            log.warn('the transcode stream or its consumer group is gone (Redis lost its data?): recreating it');
            await queue.ensureGroup().catch(() => undefined);
            continue;
          }
          log.error({ err }, 'queue read failed; retrying');
          await sleep(1_000, this.stopping.signal);
        }
      }
    } finally {
      clearInterval(beat);
      clearInterval(recoveryTimer);
      await recovery.idle();
    }
  }

  /** The subscribers' job slots; unknown (no listing) counts as unbounded, TRANSCODE_CONCURRENCY still applies. */
  private capacity(): Promise<number> {
    return this.d.directory.capacity(TRANSCODE_TOPIC).catch(() => Infinity);
  }

  /** Stop reading; in-flight invocations are abandoned unacked (another connector takes them over). */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.wake?.();
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private start(entry: QueueEntry): void {
    const done = this.handle(entry)
      .catch((err: unknown) => this.d.log.error({ err, entry: entry.id }, 'job handling failed; it stays pending and is retried'))
      .finally(() => {
        this.inFlight.delete(entry.id);
        this.wake?.();
        this.wake = null;
      });
    this.inFlight.set(entry.id, done);
  }

  private async handle(entry: QueueEntry): Promise<void> {
    const { queue, log } = this.d;
    if (!entry.job) {
      log.error({ entry: entry.id }, 'malformed job; dead-lettered');
      outcomes.inc({ outcome: 'dead_lettered' });
      return queue.deadLetter(entry, 'malformed_job');
    }
    const job = entry.job;
    const leaseMs = this.d.config.transcode.leaseSeconds * 1000;
    let unavailableWaits = 0;
    for (;;) {
      if (this.stopping.signal.aborted) return;
      const functions = await this.d.directory.subscribers(TRANSCODE_TOPIC).catch((err: unknown) => {
        log.warn({ err: (err as Error).message }, 'cannot list subscribers');
        return [] as string[];
      });
      if (functions.length === 0) {
        log.warn({ topic: TRANSCODE_TOPIC }, 'no function subscribes to the topic; waiting');
        await sleep(NO_SUBSCRIBER_WAIT_MS, this.stopping.signal);
        continue;
      }
      const results = await Promise.all(functions.map((fn) => this.invoke(fn, job)));
      if (results.some((r) => r.kind === 'aborted')) return;
      const failed = results.find((r): r is { kind: 'failed' } & Failure => r.kind === 'failed');
      if (failed) return this.fail(entry, job, failed);
      const unavailable = results.find((r) => r.kind === 'unavailable');
      if (unavailable) {
        unavailableWaits += 1;
        const delay = Math.min(retryDelayMs(this.d.config.transcode.retryBaseSeconds, unavailableWaits), UNAVAILABLE_MAX_WAIT_MS);
        log.warn({ videoId: job.videoId, code: unavailable.code, waits: unavailableWaits, retryInMs: delay }, 'no transcoder could take the job; asking again, no attempt spent');
        await sleep(delay, this.stopping.signal);
        continue;
      }
      if (results.some((r) => r.kind === 'busy')) {
        log.info({ videoId: job.videoId }, 'a transcoder is already on this video; waiting for it');
        await sleep(leaseMs / 2, this.stopping.signal);
        continue;
      }
      await queue.ack(entry);
      outcomes.inc({ outcome: 'acked' });
      log.info({ videoId: job.videoId, attempt: job.attempt, functions }, 'job done');
      return;
    }
  }

  /**
   * Audit first: if that fails the entry stays pending, is taken over after the
   * lease and tried again with the same attempt number — nothing is lost unaudited.
   */
  private async fail(entry: QueueEntry, job: TranscodeJob, failure: Failure): Promise<void> {
    const { config, queue, store, audit, log } = this.d;
    const last = job.attempt >= config.transcode.maxAttempts;
    const reason = failure.code;
    const part = job.part ? `${job.part.kind === 'chunk' ? `chunk ${job.part.index}` : job.part.kind}: ` : '';
    const failureReason = `${part}${reason} (${failure.status ? `HTTP ${failure.status}, ` : ''}attempt ${job.attempt} of ${config.transcode.maxAttempts})`;
    await audit.record({ category: 'transcode', action: last ? 'transcode.failed' : 'transcode.retry', outcome: 'failure', reason, videoId: job.videoId });
    if (last) {
      await queue.deadLetter(entry, reason);
      outcomes.inc({ outcome: 'dead_lettered' });
      log.error({ videoId: job.videoId, part: job.part ?? null, attempts: job.attempt, reason }, 'transcode failed for good; dead-lettered');
    } else {
      const delay = retryDelayMs(config.transcode.retryBaseSeconds, job.attempt);
      await queue.retryLater(entry, { ...job, attempt: job.attempt + 1 }, delay);
      outcomes.inc({ outcome: 'retried' });
      log.warn({ videoId: job.videoId, part: job.part ?? null, attempt: job.attempt, reason, retryInMs: delay }, 'transcode failed; retry scheduled');
    }
    // A part retried alone leaves the video `transcoding` (its other chunks go on); out of attempts, the whole
    // video has failed — unless the part was the preview, which only plays early: the chunks go on without it.
    if (job.part && (!last || job.part.kind === 'preview')) return;
    await (last ? markFailed : markRetrying)(store, job.videoId, failureReason).catch((err: unknown) => log.warn({ videoId: job.videoId, err: (err as Error).message }, 'could not record the failure in meta.json'));
  }

  /** POST the job to /function/<name> through the gateway (no fetch: undici cuts headers after 300 s). */
  private invoke(fn: string, job: TranscodeJob): Promise<Invocation> {
    const { config } = this.d;
    const url = new URL(`${config.gateway.url}/function/${fn}`);
    const body = JSON.stringify(job);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'X-Topic': TRANSCODE_TOPIC,
      'X-Connector': CONNECTOR_NAME,
      ...(job.traceparent ? { traceparent: job.traceparent } : {}),
    };
    return new Promise((resolve) => {
      const send = url.protocol === 'https:' ? httpsRequest : request;
      const req = send(url, { method: 'POST', headers, signal: this.stopping.signal, timeout: invokeTimeoutMs(config) }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text = (text + d).slice(0, 4096)));
        res.on('error', () => resolve({ kind: 'failed', code: 'response_interrupted', status: res.statusCode ?? null }));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve({ kind: 'ok' });
          let code = '';
          try {
            code = String((JSON.parse(text) as { error?: unknown }).error ?? '');
          } catch {
            code = '';
          }
          if (status === 429 || (status === 409 && code === 'transcode_in_progress')) return resolve({ kind: 'busy' });
          if (status === 503) return resolve({ kind: 'unavailable', code: CODE.test(code) ? code : 'http_503' });
          resolve({ kind: 'failed', code: CODE.test(code) ? code : `http_${status}`, status });
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => {
        if (this.stopping.signal.aborted) return resolve({ kind: 'aborted' });
        const errno = (err as NodeJS.ErrnoException).code ?? '';
        if (NOT_CONNECTED.has(errno)) return resolve({ kind: 'unavailable', code: 'gateway_unreachable' });
        resolve({ kind: 'failed', code: err.message === 'timeout' ? 'invoke_timeout' : 'unreachable', status: null });
      });
      req.end(body);
    });
  }
}
