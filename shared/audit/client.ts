/**
 * Audit logging API used by every function. Entries carry ids only (UUIDs,
 * user ids, roles), never titles, descriptions, filenames, tokens or raw IPs:
 * the IP is anonymised here, before it leaves the process, the user id (any JWT
 * `sub`) becomes a keyed pseudonym (./subject.ts), and every id field
 * must be a token without spaces.
 *
 * `record()` resolves only once the entry is durable in the audit file (the
 * audit writer, shared/audit/writer.ts, has appended and fsynced it), and
 * rejects with AuditUnavailableError — HTTP 503 — when that cannot be confirmed
 * within AUDIT_ACK_TIMEOUT_MS, when Redis is down, or when the writer cannot
 * persist. An access whose audit entry cannot be recorded is refused, never
 * served unaudited (fail closed). The converse can happen: an entry whose
 * acknowledgement came too late is in the log for an access that was refused.
 *
 * Two ways to the writer (docs/audit.md): directly, over the process' one
 * connection to the writer's intake (DirectChannel, shared/audit/direct.ts),
 * whenever it is up; otherwise through the Redis stream. Either way concurrent
 * calls share the round trips: the events of one event-loop turn go out in one
 * write (one line each) or one stream entry (StreamAppender: one XADD, one
 * timer), and one answer from the writer settles every call it names (one
 * deadline sweeper per process, shared/audit/pending-calls.ts).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Config } from '../platform/config.js';
import { ServiceUnavailableError } from '../platform/errors.js';
import type { Logger } from '../platform/log.js';
import { counter, gauge, histogram } from '../platform/metrics.js';
import { createRedis, type Redis } from '../platform/redis.js';
import { anonymizeIp } from './ip.js';
import { subjectPseudonym } from './subject.js';
import type { AuditActionOf } from './actions.js';
import { submittedEventSchema, type AuditCategory, type AuditOutcome, type SubmittedEvent } from './entry.js';
import { DirectChannel, DirectSubmissionError, intakeKey } from './direct.js';
import { PendingCalls } from './pending-calls.js';
import { ACK_TO_FIELD, ackChannel, AUDIT_DURABLE_KEY, AUDIT_STREAM, decodeAck, eventStreamId, streamIdTime } from './stream.js';

export type { AuditCategory, AuditOutcome };
export { AUDIT_STREAM };

interface AuditEventFields {
  outcome: AuditOutcome;
  /** Machine-readable reason for a denial or failure, e.g. `token_expired`. */
  reason?: string | null;
  /** userId: the caller's JWT `sub` as issued; the entry stores its keyed pseudonym (shared/audit/subject.ts). */
  actor?: { userId: string | null; role: string | null } | null;
  videoId?: string | null;
  /** The caller's raw IP; the audit module anonymises it before it is stored. */
  clientIp?: string | null;
  requestId?: string | null;
  /** The media path or signed scope within the video (`hls/720p/seg_003.m4s`, `original.mp4`); never a title or filename. */
  resource?: string | null;
}

/** An event of one category, its action from the one table of actions (./actions.ts): `stream`, `sign`, `finalize`, `transcode.start`, … */
export type AuditEvent = { [C in AuditCategory]: AuditEventFields & { category: C; action: AuditActionOf<C> } }[AuditCategory];

export interface AuditLog {
  /** Resolves once the entry is durably recorded; rejects (AuditUnavailableError) otherwise. */
  record(event: AuditEvent): Promise<void>;
  close(): Promise<void>;
}

/** The audit entry could not be recorded: the operation it covers must not proceed. */
export class AuditUnavailableError extends ServiceUnavailableError {
  constructor(
    readonly reason: 'redis' | 'writer' | 'timeout' | 'refused' | 'closed',
    detail: string,
  ) {
    super(`audit log unavailable: ${detail}`, 'audit_unavailable');
  }
}

/** A function built an event the audit log does not accept (a bug, not a client error). */
export class AuditEventError extends Error {
  constructor(detail: string) {
    super(`invalid audit event: ${detail}`);
    this.name = 'AuditEventError';
  }
}

const recordFailures = counter({
  name: 'pulsevault_audit_record_failures_total',
  help: 'record() calls that failed, so the audited operation was refused (503): redis, writer (direct connection lost or writer not appending), timeout, refused or closed.',
  labelNames: ['reason'] as const,
});
const recordDuration = histogram({
  name: 'pulsevault_audit_record_duration_seconds',
  help: 'Time from record() to the entry being durable in the audit file.',
  buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});

/** The Redis the lag gauges read from (the process' audit connection). */
let lagSource: Redis | null = null;
gauge({
  name: 'pulsevault_audit_sequencer_pending_entries',
  help: 'Audit events queued in Redis and not yet durable in the audit files (durable ones are trimmed within 0.1 s).',
  async collect() {
    if (lagSource?.status === 'ready') this.set(await lagSource.xlen(AUDIT_STREAM));
  },
});
gauge({
  name: 'pulsevault_audit_sequencer_lag_seconds',
  help: 'Age of the oldest audit event not yet durable in the audit files (0 when none waits; to within 0.1 s).',
  async collect() {
    if (lagSource?.status !== 'ready') return;
    const [durable, oldest] = await Promise.all([lagSource.get(AUDIT_DURABLE_KEY), lagSource.xrange(AUDIT_STREAM, '-', '+', 'COUNT', 1)]);
    const id = oldest[0]?.[0];
    this.set(id && id !== durable ? Math.max(0, (Date.now() - streamIdTime(id)) / 1000) : 0);
  },
});

/**
 * One subscriber connection per process for the writer's acknowledgements,
 * shared by every AuditLog of the process and every record() in flight. Its
 * channel is its own (ackChannel(id)): the entries it submits name it.
 */
class AckListener {
  readonly id = randomUUID();
  private readonly waiters = new PendingCalls<string>(() => new AuditUnavailableError('timeout', 'not confirmed durable within the ack timeout'));
  /** Acknowledgements that arrived while an XADD was still on its way back to us (the writer can be that fast). */
  private readonly early = new Map<string, { refused: boolean; at: number }>();
  private inFlight = 0;
  private readonly subscriber: Redis;
  /** Settles when the first SUBSCRIBE is confirmed (ioredis resubscribes by itself after reconnects). */
  private readonly firstSubscribe: Promise<boolean>;
  private subscribed = false;

  constructor(
    config: Config,
    log: Logger,
    private readonly earlyTtlMs: number,
  ) {
    this.subscriber = createRedis(config, { name: `${config.functionName ?? 'process'}:audit-acks`, blocking: true });
    this.subscriber.on('error', (err: Error) => log.debug({ err: err.message }, 'audit acknowledgement connection error'));
    // Acknowledgements published while we are disconnected are lost: fail the waiting calls now rather than at their timeout.
    this.subscriber.on('close', () => this.waiters.failAll(new AuditUnavailableError('redis', 'connection to Redis lost')));
    this.subscriber.on('message', (_channel: string, message: string) => this.onMessage(message));
    this.firstSubscribe = this.subscriber.subscribe(ackChannel(this.id)).then(
      () => (this.subscribed = true),
      () => false,
    );
  }

  /**
   * Throws unless acknowledgements can reach us: at once when Redis is known to
   * be away (we were subscribed and lost the connection: fail fast), after
   * waiting at most `timeoutMs` while the process' first connection is still
   * being set up — including when its first attempts failed (a replica started
   * during a Redis restart, or so CPU-starved that its connect timed out).
   */
  async ensureReady(timeoutMs: number): Promise<void> {
    const status = this.subscriber.status;
    if (status === 'ready' && this.subscribed) return;
    if (this.subscribed || status === 'end') throw new AuditUnavailableError('redis', 'Redis is not reachable');
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([this.firstSubscribe, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(timer);
    if (!ok || this.subscriber.status !== 'ready') throw new AuditUnavailableError('redis', 'Redis is not reachable');
  }

  /** Call before an XADD; acknowledgements arriving until endAdd() are kept for wait(). */
  beginAdd(): void {
    this.inFlight += 1;
  }

  endAdd(): void {
    this.inFlight -= 1;
    if (this.inFlight === 0) this.early.clear();
  }

  /** Resolves when `id` is durable; rejects when refused, on disconnect, or after `timeoutMs`. */
  wait(id: string, timeoutMs: number): Promise<void> {
    const early = this.early.get(id);
    if (early) {
      this.early.delete(id);
      return early.refused ? Promise.reject(new AuditUnavailableError('refused', 'the writer refused the entry')) : Promise.resolve();
    }
    return this.waiters.wait(id, timeoutMs);
  }

  private onMessage(message: string): void {
    const ack = decodeAck(message);
    if (!ack) return;
    const now = performance.now();
    for (const [ids, refused] of [[ack.durable, false], [ack.rejected, true]] as const) {
      for (const id of ids) {
        if (this.waiters.settle(id, refused ? new AuditUnavailableError('refused', 'the writer refused the entry') : null)) continue;
        if (this.inFlight > 0) this.early.set(id, { refused, at: now });
      }
    }
    // Under steady load inFlight may never drop to 0: forget acknowledgements nobody can still be waiting for.
    for (const [id, { at }] of this.early) {
      if (now - at < this.earlyTtlMs) break;
      this.early.delete(id);
    }
  }

  close(): void {
    this.waiters.close(new AuditUnavailableError('closed', 'audit log closed'));
    this.subscriber.disconnect();
  }
}

/**
 * The events of the record() calls made in one turn of the event loop, sent as
 * one XADD (one stream entry with an `event` field per call): one command for
 * Redis to run, one reply, one entry for the writer to read, instead of one
 * each. Concurrent calls come in bursts, since one acknowledgement message
 * settles many of them at once. Each call still gets its own id
 * (shared/audit/stream.ts eventStreamId), its own acknowledgement or refusal.
 * (Not ioredis' enableAutoPipelining: see shared/platform/redis.ts.)
 */
class StreamAppender {
  private queue: { json: string; resolve(id: string): void; reject(err: unknown): void }[] = [];

  constructor(
    private readonly redis: Redis,
    /** The acknowledgement id of the process' AckListener, named by every entry. */
    private readonly ackId: string,
    private readonly timeoutMs: number,
  ) {}

  /** The event's id once Redis has it; AuditUnavailableError when Redis fails or does not answer in time. */
  add(json: string): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) setImmediate(() => this.flush());
      this.queue.push({ json, resolve, reject });
    });
  }

  private flush(): void {
    const queued = this.queue;
    this.queue = [];
    let settled = false;
    const settle = (outcome: (entry: (typeof queued)[number], i: number) => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      queued.forEach(outcome);
    };
    // With Redis half-away a command can wait for reconnection attempts: bounded, one timer for the whole entry.
    const timer = setTimeout(() => settle(({ reject }) => reject(new AuditUnavailableError('timeout', 'Redis did not answer within the ack timeout'))), this.timeoutMs);
    this.redis.xadd(AUDIT_STREAM, '*', ACK_TO_FIELD, this.ackId, ...queued.flatMap(({ json }) => ['event', json])).then(
      (entryId) => settle(({ resolve }, i) => resolve(eventStreamId(entryId!, i, queued.length))),
      () => settle(({ reject }) => reject(new AuditUnavailableError('redis', 'Redis is not reachable'))),
    );
  }
}

/**
 * One per process and target, shared by every AuditLog of the process (the
 * functions' runtime, tests with several logs); closed with its last user.
 */
class Shared<T extends { close(): void }> {
  private readonly byKey = new Map<string, { value: T; users: number }>();

  take(key: string, create: () => T): { value: T; release(): void } {
    let entry = this.byKey.get(key);
    if (!entry) this.byKey.set(key, (entry = { value: create(), users: 0 }));
    entry.users += 1;
    const taken = entry;
    let released = false;
    return {
      value: taken.value,
      release: () => {
        if (released) return;
        released = true;
        taken.users -= 1;
        if (taken.users > 0) return;
        this.byKey.delete(key);
        taken.value.close();
      },
    };
  }
}

const ackListeners = new Shared<AckListener>();
const directChannels = new Shared<DirectChannel>();

/** Validate and anonymise: what is put on the stream. */
export function toSubmittedEvent(event: AuditEvent, now = new Date()): SubmittedEvent {
  const parsed = submittedEventSchema.safeParse({
    category: event.category,
    action: event.action,
    outcome: event.outcome,
    reason: event.reason ?? null,
    actor: event.actor ?? null,
    videoId: event.videoId ?? null,
    clientIp: anonymizeIp(event.clientIp),
    requestId: event.requestId ?? null,
    ...(event.resource != null && { resource: event.resource }),
    occurredAt: now.toISOString(),
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AuditEventError(`${issue?.path.join('.') || 'event'} ${issue?.message ?? 'is invalid'}`);
  }
  return parsed.data;
}

export function createAuditLog(config: Config, redis: Redis, log: Logger): AuditLog {
  const redisKey = config.redis.url ?? `${config.redis.host}:${config.redis.port}/${config.redis.db}`;
  const listener = ackListeners.take(redisKey, () => new AckListener(config, log, config.auditAckTimeoutMs));
  const writer = config.auditWriter;
  const secret = config.auditIntakeKey;
  const direct = writer && secret ? directChannels.take(`${writer.host}:${writer.port}`, () => new DirectChannel(writer, intakeKey(secret), log)) : null;
  const stream = new StreamAppender(redis, listener.value.id, config.auditAckTimeoutMs);
  lagSource ??= redis;
  let closed = false;

  /** Through the Redis stream: the way in whenever the direct connection is not up. */
  async function submitToStream(json: string, started: number): Promise<void> {
    const acks = listener.value;
    await acks.ensureReady(config.auditAckTimeoutMs);
    acks.beginAdd();
    let acked: Promise<void>;
    try {
      const id = await stream.add(json);
      acked = acks.wait(id, config.auditAckTimeoutMs - (performance.now() - started));
    } finally {
      acks.endAdd();
    }
    await acked;
  }

  async function submitDirectly(channel: DirectChannel, json: string): Promise<void> {
    try {
      await channel.submit(json, config.auditAckTimeoutMs);
    } catch (err) {
      if (err instanceof DirectSubmissionError) throw new AuditUnavailableError(err.reason, err.message);
      throw err;
    }
  }

  return {
    async record(event) {
      const { actor } = event;
      const pseudonymous = actor?.userId ? { ...event, actor: { ...actor, userId: subjectPseudonym(config.hmacSecret, actor.userId) } } : event;
      const json = JSON.stringify(toSubmittedEvent(pseudonymous));
      const started = performance.now();
      try {
        if (closed) throw new AuditUnavailableError('closed', 'audit log closed');
        if (direct?.value.canSubmit()) await submitDirectly(direct.value, json);
        else await submitToStream(json, started);
        recordDuration.observe((performance.now() - started) / 1000);
      } catch (err) {
        if (!(err instanceof AuditUnavailableError)) throw err;
        recordFailures.inc({ reason: err.reason });
        log.warn({ category: event.category, action: event.action, requestId: event.requestId ?? null, reason: err.reason }, 'audit entry not recorded; refusing the operation');
        throw err;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      if (lagSource === redis) lagSource = null;
      direct?.release();
      listener.release();
    },
  };
}
