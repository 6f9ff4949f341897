/**
 * The queue connector's loop: reads transcode jobs from the Redis stream and invokes
 * every function subscribed to the `transcode` topic through the gateway, as an
 * OpenFaaS connector does — plus what OpenFaaS connectors lack: concurrency bounded
 * by the transcoders' slots (ready replicas × max_inflight, across all connectors via
 * the group's pending count; TRANSCODE_CONCURRENCY caps one connector), ack only after
 * success, retries, a dead-letter stream, and take-over of a dead connector's jobs.
 * What each answer means (ack, wait, retry, dead letter, status, audit) is job.ts;
 * here is only the delivery: which functions, the HTTP request, its answer as a Delivery.
 *
 * Redis losing its data (NOGROUP, an emptied instance) is healed here too: the
 * group is recreated at once and the jobs meta.json says are waiting come back
 * through the recovery pass (recovery.ts), checked every few seconds.
 */
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import { JobLife, type Delivery } from './job.js';
import { isMissingGroup, TRANSCODE_TOPIC, type QueueEntry, type TranscodeJob } from './queue.js';
import type { QueueRecovery } from './recovery.js';
import type { SubscriberDirectory } from './subscribers.js';

export const CONNECTOR_NAME = 'pulsevault-queue-connector';
const NO_SUBSCRIBER_WAIT_MS = 5_000;
/** How often a connector looks again while every transcoder slot is taken. */
const CAPACITY_RECHECK_MS = 1_000;
/** How soon an emptied Redis is noticed (two GETs per check). */
const RECOVERY_CHECK_MS = 2_000;
/** Errors of a request that never reached the gateway. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

export interface ConnectorDeps {
  config: Config;
  life: JobLife;
  recovery: QueueRecovery;
  log: Logger;
  directory: SubscriberDirectory;
}

type Invocation = Delivery | { kind: 'aborted' };

/** Audit reasons are lowercase codes; anything else a function answers becomes `http_<status>`. */
const CODE = /^[a-z][a-z0-9._-]{0,63}$/;

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

/** Of the subscribers' answers, the one that decides: a failure, then no space, then nobody could try, then busy; all ok → ok. */
const PRECEDENCE: Delivery['kind'][] = ['failed', 'no_space', 'unavailable', 'busy'];
function decisive(results: Delivery[]): Delivery {
  for (const kind of PRECEDENCE) {
    const found = results.find((r) => r.kind === kind);
    if (found) return found;
  }
  return { kind: 'ok' };
}

export class QueueConnector {
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  private wake: (() => void) | null = null;

  constructor(private readonly d: ConnectorDeps) {}

  /** Runs until stop(); resolves when the read loop has ended. */
  async run(): Promise<void> {
    const { config, life, recovery, log } = this.d;
    await life.ensureGroup();
    const beat = setInterval(() => {
      life.heartbeat([...this.inFlight.keys()]).catch((err: unknown) => log.warn({ err }, 'heartbeat failed'));
    }, life.heartbeatEveryMs);
    // A timer of its own: the read loop may sit waiting for a free slot for as long as a transcode lasts.
    const checkRecovery = () => void recovery.check().catch((err: unknown) => log.debug({ err: (err as Error).message }, 'queue recovery check failed'));
    checkRecovery();
    const recoveryTimer = setInterval(checkRecovery, RECOVERY_CHECK_MS);
    log.info({ consumer: life.consumer, concurrency: config.transcode.concurrency, leaseSeconds: config.transcode.leaseSeconds }, 'queue connector started');
    try {
      while (!this.stopping.signal.aborted) {
        const free = config.transcode.concurrency - this.inFlight.size;
        if (free <= 0) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        try {
          const entries = await life.take(free, () => this.capacity(), (id) => this.inFlight.has(id));
          if (entries === 'full') {
            await sleep(CAPACITY_RECHECK_MS, this.stopping.signal);
            continue;
          }
          for (const entry of entries) this.start(entry);
        } catch (err) {
          if (this.stopping.signal.aborted) break;
          if (isMissingGroup(err)) {
            log.warn('the transcode stream or its consumer group is gone (Redis lost its data?): recreating it');
            await life.ensureGroup().catch(() => undefined);
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
    const { life, log } = this.d;
    const { job } = entry;
    if (!job) return life.malformed(entry);
    let waits = 0;
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
      const delivery = decisive(results as Delivery[]);
      // Only the waits that back off count towards their back-off; waiting for a busy transcoder does not.
      if (delivery.kind === 'unavailable' || delivery.kind === 'no_space') waits += 1;
      const next = await life.settle({ ...entry, job }, delivery, waits);
      if (next.kind === 'settled') return;
      await sleep(next.ms, this.stopping.signal);
    }
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
          if (status === 507) return resolve({ kind: 'no_space', code: CODE.test(code) ? code : 'http_507' });
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
