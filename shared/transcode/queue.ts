/**
 * The transcode queue: a Redis Stream read through a consumer group, so a job
 * survives any process dying (at-least-once).
 *
 * - `pulsevault:transcode:jobs`: waiting and in-flight jobs. XREADGROUP hands a
 *   job to one connector; it stays in the group's pending list until XACK. A
 *   connector heartbeats its pending jobs (XCLAIM to itself resets the idle
 *   time); a job idle longer than the lease belongs to a dead connector and is
 *   taken over with XAUTOCLAIM. Acked jobs are XDEL'd, so XLEN = waiting + in flight.
 * - `pulsevault:transcode:delayed`: failed jobs waiting for their retry (sorted
 *   set by due time, job bodies in a hash), moved back to the stream when due.
 * - `pulsevault:transcode:dead`: the dead-letter stream (jobs out of attempts).
 * - `pulsevault:transcode:active:<job key>`: which entry (or `delayed`) holds
 *   the job, so enqueueing a job that is already queued is a no-op. The job key
 *   is the video id for a whole-video job, `<videoId>:preview|chunk:<n>|join`
 *   for the parts of a fanned-out one (each part retried and dead-lettered alone).
 *
 * What a job's outcome means (retry, dead letter, status, audit) is shared/transcode/job.ts.
 * Multi-key scripts assume one Redis (not Cluster), as the rest of PulseVault does.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { UUID_PATTERN } from '../platform/ids.js';
import { gauge } from '../platform/metrics.js';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';

export const TRANSCODE_STREAM = 'pulsevault:transcode:jobs';
export const TRANSCODE_GROUP = 'transcoders';
export const DEAD_LETTER_STREAM = 'pulsevault:transcode:dead';
export const DELAYED_SET = 'pulsevault:transcode:delayed';
export const DELAYED_JOBS = 'pulsevault:transcode:delayed:jobs';
const ACTIVE_PREFIX = 'pulsevault:transcode:active:';
export const activeKey = (key: string) => `${ACTIVE_PREFIX}${key}`;
/** The connector topic the transcoder subscribes to (stack.yml `topic` annotation). */
export const TRANSCODE_TOPIC = 'transcode';
/** Dead-letter entries kept (approximately): enough to investigate, bounded. */
const DEAD_LETTER_MAXLEN = 10_000;

/** A part of a fanned-out transcode (shared/transcode/fanout.ts): the early preview, one time chunk, or the join. Absent: the whole video. */
export const transcodePartSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('preview') }),
  z.object({ kind: z.literal('chunk'), index: z.number().int().min(0) }),
  z.object({ kind: z.literal('join') }),
]);
export type TranscodePart = z.infer<typeof transcodePartSchema>;

export const transcodeJobSchema = z.object({
  videoId: z.string().regex(UUID_PATTERN, 'must be a lowercase UUID'),
  part: transcodePartSchema.optional(),
  attempt: z.number().int().min(1),
  enqueuedAt: z.string(),
  traceId: z.string().min(1).max(64),
  traceparent: z.string().max(256).nullable().optional(),
});
export type TranscodeJob = z.infer<typeof transcodeJobSchema>;

/** What a job is deduplicated, retried and reclaimed by: the video, or the video's part. */
export function jobKey(job: Pick<TranscodeJob, 'videoId' | 'part'>): string {
  if (!job.part) return job.videoId;
  return job.part.kind === 'chunk' ? `${job.videoId}:chunk:${job.part.index}` : `${job.videoId}:${job.part.kind}`;
}

/** A job as read from the stream: its entry id and body. */
export interface QueueEntry {
  id: string;
  job: TranscodeJob | null;
  /** The raw body when it did not parse (dead-lettered as malformed). */
  raw: string;
}

// The video's live job (an entry still in the stream, or a scheduled retry), or false. KEYS: stream, active key, delayed set.
const LIVE_JOB = `
local function live_job(video_id)
  local cur = redis.call('GET', KEYS[2])
  if not cur then return false end
  if cur == 'delayed' then
    if redis.call('ZSCORE', KEYS[3], video_id) then return cur end
  elseif #redis.call('XRANGE', KEYS[1], cur, cur) > 0 then
    return cur
  end
  return false
end`;

const HAS_LIVE_JOB = `${LIVE_JOB}
return live_job(ARGV[1]) and 1 or 0`;

// Enqueue unless the video already has a live job.
const ENQUEUE = `${LIVE_JOB}
local cur = live_job(ARGV[2])
if cur then return {0, cur} end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('SET', KEYS[2], id)
return {1, id}`;

const ACK = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1`;

const RETRY_LATER = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5])
redis.call('SET', KEYS[2], 'delayed')
return 1`;

const DEAD_LETTER = `
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'job', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1`;

// Due retries back into the stream. Active keys are derived in the script (single Redis only).
const PROMOTE = `
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(due) do
  local job = redis.call('HGET', KEYS[3], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  if job then
    local id = redis.call('XADD', KEYS[1], '*', 'job', job)
    redis.call('SET', ARGV[3] .. key, id)
  end
end
return #due`;

// Reset the idle time of entries this consumer still owns (never steal one another consumer took over).
const HEARTBEAT = `
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n`;

export interface EnqueueResult {
  job: TranscodeJob;
  /** false when the video already had a job waiting, running or scheduled for retry. */
  enqueued: boolean;
  entryId: string;
}

/** A first attempt at the whole of `videoId` (shared/transcode/job.ts adds parts and decides when). */
export function newJob(videoId: string, traceparent: string | null): TranscodeJob {
  return { videoId, attempt: 1, enqueuedAt: new Date().toISOString(), traceId: traceIdOf(traceparent), traceparent };
}

/** Add `job` unless its key (video, or video's part) already has a live job. */
export async function addJob(redis: Redis, job: TranscodeJob): Promise<EnqueueResult> {
  const key = jobKey(job);
  const [added, entryId] = (await redis.eval(ENQUEUE, 3, TRANSCODE_STREAM, activeKey(key), DELAYED_SET, JSON.stringify(job), key)) as [number, string];
  return { job, enqueued: added === 1, entryId };
}

/** Whether the video has a job waiting, running or scheduled for retry. */
export async function hasLiveJob(redis: Redis, videoId: string): Promise<boolean> {
  return (await redis.eval(HAS_LIVE_JOB, 3, TRANSCODE_STREAM, activeKey(videoId), DELAYED_SET, videoId)) === 1;
}

/** The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), or a fresh one. */
function traceIdOf(traceparent: string | null): string {
  const m = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/.exec(traceparent ?? '');
  return m ? m[1]! : randomUUID().replace(/-/g, '');
}

function toEntry(id: string, fields: string[] | null): QueueEntry {
  const raw = fields?.[fields.indexOf('job') + 1] ?? '';
  let job: TranscodeJob | null = null;
  try {
    const parsed = transcodeJobSchema.safeParse(JSON.parse(raw));
    job = parsed.success ? parsed.data : null;
  } catch {
    job = null;
  }
  return { id, job, raw };
}

export interface QueueStats {
  /** Jobs not yet handed to a connector, including scheduled retries. */
  waiting: number;
  inFlight: number;
  delayed: number;
  deadLettered: number;
  /** Age of the oldest job in the stream, seconds (0 when empty). */
  oldestAgeSeconds: number;
}

/** The consumer side (queue connector) and the numbers (metrics, CLI). */
const DISPATCH_LEASE_KEY = 'pulsevault:transcode:dispatch';

export class TranscodeQueue {
  private claimCursor = '0-0';

  constructor(
    private readonly redis: Redis,
    /** A connection of its own for XREADGROUP BLOCK. */
    private readonly blocking: Redis,
    readonly consumer: string,
  ) {}

  /**
   * Create the consumer group (from the start of the stream, so jobs added before it are read).
   * Called at start and whenever Redis answers NOGROUP (it lost its data, or someone deleted the stream).
   */
  async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', TRANSCODE_STREAM, TRANSCODE_GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  /** New jobs for this consumer, waiting up to `blockMs` for one. */
  async read(count: number, blockMs: number): Promise<QueueEntry[]> {
    const res = (await this.blocking.xreadgroup('GROUP', TRANSCODE_GROUP, this.consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', TRANSCODE_STREAM, '>')) as
      | [string, [string, string[]][]][]
      | null;
    return (res?.[0]?.[1] ?? []).map(([id, fields]) => toEntry(id, fields));
  }

  /** Take over jobs idle longer than `minIdleMs` (their connector died). */
  async reclaim(minIdleMs: number, count: number): Promise<QueueEntry[]> {
    const [next, entries] = (await this.redis.xautoclaim(TRANSCODE_STREAM, TRANSCODE_GROUP, this.consumer, minIdleMs, this.claimCursor, 'COUNT', count)) as [
      string,
      [string, string[] | null][],
    ];
    this.claimCursor = next;
    return entries.filter(([, fields]) => fields !== null).map(([id, fields]) => toEntry(id, fields));
  }

  /**
   * The lease a connector holds while it counts free transcoder slots and reads that many jobs: without it two
   * connectors could both count the same free slots (the group's pending count moves only once one has read).
   */
  dispatchLease(ttlMs: number): RedisLease {
    return new RedisLease(this.redis, DISPATCH_LEASE_KEY, { ttlMs });
  }

  /** Jobs handed out and not yet acked, by every connector of the group (XPENDING). */
  async inFlight(): Promise<number> {
    return Number(((await this.redis.xpending(TRANSCODE_STREAM, TRANSCODE_GROUP)) as [number, ...unknown[]])[0]);
  }

  /** Tell other connectors these jobs are still being worked on. */
  async heartbeat(ids: string[]): Promise<void> {
    if (ids.length > 0) await this.redis.eval(HEARTBEAT, 1, TRANSCODE_STREAM, TRANSCODE_GROUP, this.consumer, ...ids);
  }

  async ack(entry: QueueEntry): Promise<void> {
    await this.redis.eval(ACK, 2, TRANSCODE_STREAM, activeKey(entry.job ? jobKey(entry.job) : ''), TRANSCODE_GROUP, entry.id);
  }

  /** Replace the entry by `next` (attempt + 1), due in `delayMs`. */
  async retryLater(entry: QueueEntry, next: TranscodeJob, delayMs: number): Promise<void> {
    await this.redis.eval(
      RETRY_LATER,
      4,
      TRANSCODE_STREAM,
      activeKey(jobKey(next)),
      DELAYED_SET,
      DELAYED_JOBS,
      TRANSCODE_GROUP,
      entry.id,
      jobKey(next),
      String(Date.now() + delayMs),
      JSON.stringify(next),
    );
  }

  async deadLetter(entry: QueueEntry, reason: string): Promise<void> {
    const body = JSON.stringify({ ...(entry.job ?? { raw: entry.raw }), reason, deadAt: new Date().toISOString() });
    await this.redis.eval(DEAD_LETTER, 3, TRANSCODE_STREAM, activeKey(entry.job ? jobKey(entry.job) : ''), DEAD_LETTER_STREAM, TRANSCODE_GROUP, entry.id, body, String(DEAD_LETTER_MAXLEN));
  }

  /** Move due retries back into the stream; returns how many. */
  async promoteDue(limit = 100): Promise<number> {
    return (await this.redis.eval(PROMOTE, 3, TRANSCODE_STREAM, DELAYED_SET, DELAYED_JOBS, String(Date.now()), String(limit), ACTIVE_PREFIX)) as number;
  }
}

/** Redis no longer has the stream or its group: a read or ack answered NOGROUP. */
export function isMissingGroup(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOGROUP');
}

export async function queueStats(redis: Redis): Promise<QueueStats> {
  const [len, groups, delayed, dead, oldest] = await Promise.all([
    redis.xlen(TRANSCODE_STREAM),
    (redis.xinfo('GROUPS', TRANSCODE_STREAM) as Promise<unknown[][]>).catch(() => [] as unknown[][]),
    redis.zcard(DELAYED_SET),
    redis.xlen(DEAD_LETTER_STREAM),
    redis.xrange(TRANSCODE_STREAM, '-', '+', 'COUNT', 1),
  ]);
  const group = groups.find((g) => g[g.indexOf('name') + 1] === TRANSCODE_GROUP);
  const inFlight = group ? Number(group[group.indexOf('pending') + 1]) : 0;
  const oldestMs = oldest[0] ? Number(oldest[0][0].split('-')[0]) : null;
  return {
    waiting: Math.max(0, len - inFlight) + delayed,
    inFlight,
    delayed,
    deadLettered: dead,
    oldestAgeSeconds: oldestMs === null ? 0 : Math.max(0, (Date.now() - oldestMs) / 1000),
  };
}

/** Queue gauges, read from Redis at scrape time (every replica reports the same numbers: use max()). */
export function registerQueueMetrics(redis: Redis): void {
  // One Redis round trip per scrape, shared by the four gauges collected together.
  let pending: Promise<QueueStats | null> | null = null;
  const stats = () => {
    pending ??= queueStats(redis)
      .catch(() => null)
      .finally(() => setImmediate(() => (pending = null)));
    return pending;
  };
  gauge({
    name: 'pulsevault_queue_length',
    help: 'Transcode jobs waiting (not yet handed to a transcoder), including scheduled retries.',
    async collect() {
      const s = await stats();
      if (s) this.set(s.waiting);
    },
  });
  gauge({
    name: 'pulsevault_queue_in_flight',
    help: 'Transcode jobs handed to a connector and not yet acknowledged.',
    async collect() {
      const s = await stats();
      if (s) this.set(s.inFlight);
    },
  });
  gauge({
    name: 'pulsevault_queue_oldest_job_age_seconds',
    help: 'Age of the oldest job in the transcode stream (waiting or in flight).',
    async collect() {
      const s = await stats();
      if (s) this.set(s.oldestAgeSeconds);
    },
  });
  gauge({
    name: 'pulsevault_queue_dead_letter_length',
    help: 'Jobs in the transcode dead-letter stream.',
    async collect() {
      const s = await stats();
      if (s) this.set(s.deadLettered);
    },
  });
}
