/**
 * The webhook sender: delivers the outbox (./events.ts) to every subscribed endpoint, at least
 * once. The durable record is the outbox on the media volume; Redis holds the delivery state:
 *
 * - `pulsevault:webhooks:fed:<eventId>`: the event was fanned out (SET NX: once per Redis).
 * - `pulsevault:webhooks:due:<endpointId>`: a sorted set of the endpoint's deliveries by due time.
 *   A sender claims the earliest due one by pushing its score a lease ahead (one script, so two
 *   senders never take the same one); a sender killed mid-delivery leaves the claim to lapse, and
 *   the delivery is made again with the same `webhook-id`.
 * - `pulsevault:webhooks:attempts:<endpointId>`: attempts and first-attempt time per event, and
 *   `<eventId>:dead` while a replayed dead letter waits (its file goes once it is delivered).
 * - `pulsevault:webhooks:targets:<eventId>`: endpoints still to deliver to; empty → the outbox
 *   file is removed.
 *
 * Each endpoint has its own loop (one delivery in flight per endpoint, in order of due time), so
 * a slow or dead endpoint never delays another. A failed attempt is retried with exponential
 * backoff and full jitter until `retryForMs` has passed since the first attempt (≥ 24 h in
 * production), then dead-lettered: `<webhooks>/dead/<endpointId>/<eventId>.json`, durable, until
 * `pulsevault webhooks replay` schedules it again.
 *
 * Per delivery the hot path is one script (settle the last event, claim the next) and the POST:
 * the endpoint record comes from the last scan (a deletion or a rotation is seen at the next
 * scan, ≤ pollMs later; the old secret is still valid meanwhile; an endpoint the scan no longer
 * lists is confirmed gone on disk before its deliveries are dropped), and the event's bytes from
 * the scan that fed it.
 *
 * Redis lost its data: the fed keys are gone too, so the next scan fans every event still in the
 * outbox out again. An endpoint that already had it sees the same `webhook-id` again (receivers
 * deduplicate by it), never a lost event.
 */
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { readdirIfExists } from '../platform/exists.js';
import path from 'node:path';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { NotFoundError } from '../platform/errors.js';
import type { Logger } from '../platform/log.js';
import { counter, gauge } from '../platform/metrics.js';
import type { Redis } from '../platform/redis.js';
import type { Deliverer } from './deliver.js';
import { EndpointStore, signingSecrets, subscribes, type EndpointRecord } from './endpoints.js';
import { isEventId, type WebhookEvent } from './events.js';
import { signDelivery } from './signing.js';

const FED = (eventId: string) => `pulsevault:webhooks:fed:${eventId}`;
const DUE = (endpointId: string) => `pulsevault:webhooks:due:${endpointId}`;
const ATTEMPTS = (endpointId: string) => `pulsevault:webhooks:attempts:${endpointId}`;
const TARGETS = (eventId: string) => `pulsevault:webhooks:targets:${eventId}`;
/** Marks "this Redis holds the fed keys this process remembers"; missing → Redis lost its data. */
const EPOCH = 'pulsevault:webhooks:epoch';

// One step of an endpoint's loop, one round trip: settle the event it is done with (delivered,
// dead-lettered, or gone), then claim the earliest due one (its score moves a lease ahead, so two
// senders never take the same one). KEYS: due set, attempts hash, the settled event's targets.
// ARGV: now, lease end, settled event id ('' for none), endpoint id, claim (1) or only settle (0).
// Returns {endpoints still to get the settled event (-1: none settled, or this endpoint was no longer
// among its targets: Redis lost them, and the outbox file must stay for the scan to feed it again), claimed id,
// replayed dead letter}.
const STEP = `
local left = -1
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[3])
  redis.call('HDEL', KEYS[2], ARGV[3] .. ':n', ARGV[3] .. ':first', ARGV[3] .. ':dead')
  if redis.call('SREM', KEYS[3], ARGV[4]) == 1 then left = redis.call('SCARD', KEYS[3]) end
end
if ARGV[5] ~= '1' then return {left} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return {left} end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], due[1])
return {left, due[1], redis.call('HEXISTS', KEYS[2], due[1] .. ':dead')}`;

/** Event bytes kept from the scan that read them (a miss reads the outbox file again). */
const EVENT_CACHE_ENTRIES = 10_000;

const deliveries = () => counter({ name: 'pulsevault_webhook_deliveries_total', help: 'Webhook delivery attempts by endpoint and outcome (delivered, failed, dead_lettered).', labelNames: ['endpoint', 'outcome'] as const });
const oldest = () => gauge({ name: 'pulsevault_webhook_oldest_undelivered_seconds', help: 'Age of the oldest event an endpoint has not received yet (0: none waiting).', labelNames: ['endpoint'] as const });
const failingSince = () => gauge({ name: 'pulsevault_webhook_endpoint_failing_seconds', help: 'How long an endpoint has failed every attempt (0: its last attempt succeeded).', labelNames: ['endpoint'] as const });

export interface SenderOptions {
  redis: Redis;
  /** `<MEDIA_ROOT>/webhooks`: outbox/, endpoints/, dead/. */
  webhooksDir: string;
  /** The endpoints (their secrets wrapped by the KEK in production); default: `<webhooksDir>/endpoints`, secrets in the clear. */
  endpoints?: EndpointStore;
  deliverer: Deliverer;
  log: Logger;
  /** First retry delay; doubles per attempt, full jitter, capped at an hour. */
  retryBaseMs: number;
  /** Retries stop this long after the first attempt (dead letter). */
  retryForMs: number;
  /** How long a claimed delivery is this sender's before another takes it (> the attempt timeout). */
  claimMs: number;
  pollMs: number;
}

export function backoffMs(attempt: number, baseMs: number, random = Math.random): number {
  const ceiling = Math.min(baseMs * 2 ** Math.max(0, attempt - 1), 3_600_000);
  return Math.max(baseMs, Math.floor(random() * ceiling));
}

export class WebhookSender {
  private readonly endpoints: EndpointStore;
  /** The endpoints as the last scan read them. */
  private current = new Map<string, EndpointRecord>();
  private readonly eventBytes = new LRUCache<string, string>({ max: EVENT_CACHE_ENTRIES });
  private readonly loops = new Map<string, Promise<void>>();
  /** Outbox files being removed (the last endpoint got them); stop() waits for them. */
  private readonly removals = new Set<Promise<void>>();
  private readonly failing = new Map<string, number>();
  /** Events this process saw fed, valid while Redis keeps `epoch` (a scan then skips them without a read). */
  private readonly fed = new Set<string>();
  private epoch: string | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly o: SenderOptions) {
    this.endpoints = o.endpoints ?? new EndpointStore(o.webhooksDir);
  }

  get outbox(): string {
    return path.join(this.o.webhooksDir, 'outbox');
  }

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      try {
        await this.scan();
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'webhook scan failed; it runs again');
      }
      if (!this.stopped) this.timer = setTimeout(() => void tick(), this.o.pollMs);
    };
    void tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all(this.loops.values());
    await Promise.all(this.removals);
  }

  /** Fan out new outbox events, start a loop per endpoint with something due, refresh the gauges. */
  async scan(): Promise<void> {
    const endpoints = await this.endpoints.list();
    const { redis } = this.o;
    const epoch = await redis.get(EPOCH);
    if (epoch === null || epoch !== this.epoch) {
      // Redis is new or came back empty: forget what was fed, so every outbox event is fed again.
      this.fed.clear();
      await redis.set(EPOCH, randomUUID(), 'NX');
      this.epoch = await redis.get(EPOCH);
    }
    this.current = new Map(endpoints.map((e) => [e.id, e]));
    const events = await this.readOutbox();
    // One round trip marks every new event fed; only the events this call was first for fan out.
    const marks = events.length > 0 ? await redis.pipeline(events.map((e) => ['set', FED(e.id), '1', 'NX'])).exec() : [];
    const fanOut = redis.multi();
    for (const [i, event] of events.entries()) {
      const [err, first] = marks![i]!;
      if (err) throw err;
      this.fed.add(event.id);
      if (first !== 'OK') continue;
      const targets = endpoints.filter((e) => subscribes(e, event.type));
      if (targets.length === 0) {
        await rm(path.join(this.outbox, `${event.id}.json`), { force: true });
        fanOut.del(FED(event.id));
        continue;
      }
      const at = Date.parse(event.timestamp);
      fanOut.sadd(TARGETS(event.id), ...targets.map((t) => t.id));
      for (const t of targets) fanOut.zadd(DUE(t.id), 'NX', Date.now(), event.id).hsetnx(ATTEMPTS(t.id), `${event.id}:first`, String(at));
    }
    if (fanOut.length > 0) await fanOut.exec();
    for (const endpoint of endpoints) {
      if (!this.loops.has(endpoint.id)) {
        // A failure here (Redis, the disk) leaves the claim to lapse: the next scan starts the loop again.
        const loop = this.drain(endpoint)
          .catch((err: Error) => this.o.log.warn({ endpoint: endpoint.id, err: err.message }, 'webhook delivery loop stopped; the next scan restarts it'))
          .finally(() => this.loops.delete(endpoint.id));
        this.loops.set(endpoint.id, loop);
      }
      await this.measure(endpoint.id);
    }
  }

  private async readOutbox(): Promise<WebhookEvent[]> {
    const names = await readdirIfExists(this.outbox);
    const events: WebhookEvent[] = [];
    for (const name of names) {
      if (!name.endsWith('.json') || !isEventId(name.slice(0, -5)) || this.fed.has(name.slice(0, -5))) continue;
      const raw = await readFile(path.join(this.outbox, name), 'utf8').catch(() => null);
      if (!raw) continue;
      const event = JSON.parse(raw) as WebhookEvent;
      this.eventBytes.set(event.id, raw);
      events.push(event);
    }
    return events;
  }

  private async measure(endpointId: string): Promise<void> {
    const first = await this.o.redis.zrange(DUE(endpointId), 0, 0);
    const firstAt = first[0] ? await this.o.redis.hget(ATTEMPTS(endpointId), `${first[0]}:first`) : null;
    oldest().set({ endpoint: endpointId }, firstAt ? Math.max(0, (Date.now() - Number(firstAt)) / 1000) : 0);
    const since = this.failing.get(endpointId);
    failingSince().set({ endpoint: endpointId }, since ? (Date.now() - since) / 1000 : 0);
  }

  /** Deliver everything due to one endpoint, one at a time; returns when nothing is due. */
  private async drain(endpoint: EndpointRecord): Promise<void> {
    const id = endpoint.id;
    let settled: string | null = null;
    for (;;) {
      const now = Date.now();
      const [left, next, replayed] = (await this.o.redis.eval(STEP, 3, DUE(id), ATTEMPTS(id), TARGETS(settled ?? ''), now, now + this.o.claimMs, settled ?? '', id, this.stopped ? 0 : 1)) as [number, string?, number?];
      if (settled !== null && left === 0) this.removeFromOutbox(settled);
      if (next === undefined) return;
      settled = (await this.deliverOne(id, next, replayed === 1)) ? next : null;
    }
  }

  /** Every endpoint has the event: its outbox file goes, beside the next delivery (a crash before it leaves a file whose fed key keeps it from being sent again). */
  private removeFromOutbox(eventId: string): void {
    this.fed.delete(eventId);
    this.eventBytes.delete(eventId);
    const removal: Promise<void> = rm(path.join(this.outbox, `${eventId}.json`), { force: true })
      .catch((err: Error) => this.o.log.warn({ eventId, err: err.message }, 'could not remove a delivered event from the outbox'))
      .finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }

  /** The endpoint as the last scan saw it; one it no longer lists is looked up on disk (null: deleted). */
  private async endpointNow(id: string): Promise<EndpointRecord | null> {
    const listed = this.current.get(id);
    if (listed) return listed;
    try {
      return await this.endpoints.get(id);
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
  }

  private async eventRaw(endpointId: string, eventId: string, replayed: boolean): Promise<string | null> {
    const cached = this.eventBytes.get(eventId);
    if (cached) return cached;
    const raw = (await readFile(path.join(this.outbox, `${eventId}.json`), 'utf8').catch(() => null)) ?? (replayed ? await readFile(this.deadFile(endpointId, eventId), 'utf8').catch(() => null) : null);
    if (raw) this.eventBytes.set(eventId, raw);
    return raw;
  }

  /** One attempt; true when the endpoint is done with the event (the next step settles it), false when it is due again later. */
  private async deliverOne(endpointId: string, eventId: string, replayed: boolean): Promise<boolean> {
    const { redis, log } = this.o;
    const raw = await this.eventRaw(endpointId, eventId, replayed);
    // Neither in the outbox nor dead-lettered: delivered everywhere already (a replay of a stale entry).
    if (!raw) return true;
    const event = JSON.parse(raw) as WebhookEvent;
    const body = JSON.stringify({ type: event.type, timestamp: event.timestamp, data: event.data });
    const endpoint = await this.endpointNow(endpointId);
    // The endpoint was deleted: nothing to deliver to.
    if (!endpoint) return true;
    const outcome = await this.o.deliverer.attempt(endpoint.url, signDelivery(signingSecrets(endpoint), event.id, new Date(), body), body);
    if (outcome.ok) {
      deliveries().inc({ endpoint: endpoint.id, outcome: 'delivered' });
      this.failing.delete(endpoint.id);
      if (replayed) await rm(this.deadFile(endpoint.id, eventId), { force: true });
      return true;
    }
    if (!this.failing.has(endpoint.id)) this.failing.set(endpoint.id, Date.now());
    const attempts = await redis.hincrby(ATTEMPTS(endpoint.id), `${eventId}:n`, 1);
    const first = Number((await redis.hget(ATTEMPTS(endpoint.id), `${eventId}:first`)) ?? Date.now());
    const retryAt = Date.now() + backoffMs(attempts, this.o.retryBaseMs);
    // Only the origin and the reason: never the path, the body or a header of the delivery.
    log.warn({ endpoint: endpoint.id, eventId, attempts, status: outcome.status, reason: outcome.reason }, 'webhook delivery failed');
    if (retryAt - first > this.o.retryForMs) {
      deliveries().inc({ endpoint: endpoint.id, outcome: 'dead_lettered' });
      await mkdir(path.dirname(this.deadFile(endpoint.id, eventId)), { recursive: true });
      await writeFileAtomic(this.deadFile(endpoint.id, eventId), raw);
      log.error({ endpoint: endpoint.id, eventId, attempts }, 'webhook dead-lettered: retries exhausted (pulsevault webhooks replay)');
      return true;
    }
    deliveries().inc({ endpoint: endpoint.id, outcome: 'failed' });
    await redis.zadd(DUE(endpoint.id), 'XX', retryAt, eventId);
    return false;
  }

  deadFile(endpointId: string, eventId: string): string {
    return path.join(this.o.webhooksDir, 'dead', endpointId, `${eventId}.json`);
  }
}

/** The dead letters per endpoint id (`pulsevault webhooks list`). */
export async function deadLetterCounts(webhooksDir: string): Promise<Record<string, number>> {
  const root = path.join(webhooksDir, 'dead');
  const counts: Record<string, number> = {};
  for (const id of await readdir(root).catch(() => [] as string[])) {
    counts[id] = (await readdir(path.join(root, id)).catch(() => [] as string[])).filter((n) => isEventId(n.slice(0, -5))).length;
  }
  return counts;
}

/** `pulsevault webhooks replay`: every dead letter (of one endpoint, or all) is due again now, its attempts reset. */
export async function replayDeadLetters(redis: Redis, webhooksDir: string, endpointId: string | null = null): Promise<number> {
  const root = path.join(webhooksDir, 'dead');
  const endpoints = endpointId ? [endpointId] : await readdir(root).catch(() => [] as string[]);
  let n = 0;
  for (const id of endpoints) {
    for (const name of await readdir(path.join(root, id)).catch(() => [] as string[])) {
      const eventId = name.slice(0, -5);
      if (!isEventId(eventId)) continue;
      await redis.multi().zadd(DUE(id), Date.now(), eventId).hset(ATTEMPTS(id), `${eventId}:first`, String(Date.now()), `${eventId}:dead`, '1').sadd(TARGETS(eventId), id).exec();
      n++;
    }
  }
  return n;
}
