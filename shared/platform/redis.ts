/**
 * Every Redis connection of every process (ioredis) comes from here, from the configuration:
 * straight to REDIS_URL / REDIS_HOST:REDIS_PORT, or through Sentinel when REDIS_SENTINELS is set.
 *
 * Through Sentinel (ioredis' SentinelConnector), what a failover relies on:
 * - each (re)connect asks the Sentinels for the primary and checks the server's INFO role is
 *   `master` before the connection is ready (a replica or an unpromoted old address is refused and
 *   the next attempt asks again), so a killed primary costs retries until Sentinel promotes a replica;
 * - `failoverDetector` subscribes to the Sentinels' `+switch-master` and drops connections to the old
 *   primary, also when it is alive but cut off (a partition), rather than writing to it until it is demoted;
 * - a demoted primary answers writes with READONLY: that reply reconnects (and the command fails as a 503);
 * - commands issued meanwhile wait in the offline queue, still bounded by the command deadline, so a
 *   request answers 503 within REDIS_COMMAND_TIMEOUT_MS rather than wait for the failover to end.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { gauge } from './metrics.js';

export type { Redis };

export interface ConnectOptions {
  /** Connection name shown by CLIENT LIST (function or service name). */
  name: string;
  /**
   * Blocking commands (XREADGROUP BLOCK, BLPOP) need a connection of their own
   * and must wait for Redis to come back rather than fail the command.
   */
  blocking?: boolean;
  /** Where connection trouble is reported (once per outage). */
  log?: Logger;
}

const CONNECT_TIMEOUT_MS = 2_000;
const retryStrategy = (times: number) => Math.min(100 * 2 ** times, 2_000);

/** The one place a client is made: through the Sentinels and master name, or to the server itself. */
function newClient(redis: Config['redis'], options: RedisOptions): Redis {
  const auth = redis.password ? { password: redis.password } : {};
  if (redis.sentinel) {
    return new Redis({
      ...auth,
      db: redis.db,
      sentinels: redis.sentinel.sentinels,
      name: redis.sentinel.name,
      ...(redis.sentinel.password ? { sentinelPassword: redis.sentinel.password } : {}),
      sentinelCommandTimeout: CONNECT_TIMEOUT_MS,
      // All Sentinels away: keep asking (null would end the connection for good).
      sentinelRetryStrategy: retryStrategy,
      failoverDetector: true,
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
      ...options,
    });
  }
  return redis.url ? new Redis(redis.url, { ...auth, ...options }) : new Redis({ ...auth, host: redis.host, port: redis.port, db: redis.db, ...options });
}

/**
 * Whether the configuration names a Redis to use (REDIS_SENTINELS, REDIS_URL, or a REDIS_HOST/REDIS_PORT other
 * than the default localhost:6379): only then does the local stack share one (otherwise it runs its own), and
 * only then does `pulsevault audit verify` read the audit anchors (another program's localhost:6379 holds none of ours).
 */
export function namesRedis(config: Config): boolean {
  return config.redis.sentinel !== null || config.redis.url !== null || config.redis.host !== 'localhost' || config.redis.port !== 6379;
}

/** The address to show in logs: host:port, or the Sentinels and master name (never a password). */
export function redisAddress(redis: Config['redis']): string {
  if (redis.sentinel) return `sentinel ${redis.sentinel.name}@${redis.sentinel.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
  if (redis.url) return new URL(redis.url).host;
  return `${redis.host}:${redis.port}`;
}

export function redisOptions(config: Config, { name, blocking = false }: ConnectOptions): RedisOptions {
  const deadline = config.redis.commandTimeoutMs;
  return {
    connectionName: `pulsevault:${name}`,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // Request paths fail fast when Redis is away (one retry) or frozen (the deadline): the caller answers 503.
    // Blocking readers wait for Redis to come back, and get no command deadline (it would cut their BLOCK
    // short); a BLOCK unanswered for `deadline` past its own timeout ends empty and is simply issued again.
    ...(blocking
      ? { maxRetriesPerRequest: null, blockingTimeout: deadline, blockingTimeoutGrace: deadline }
      : { maxRetriesPerRequest: 1, commandTimeout: deadline }),
    // Commands issued while connecting wait in the queue, still bounded by the deadline above.
    enableOfflineQueue: true,
    retryStrategy,
    lazyConnect: false,
    // No enableAutoPipelining: with commandTimeout, a command that times out inside ioredis 5's auto-pipeline
    // also rejects a promise nobody holds (an unhandled rejection, seen in CI while Redis was frozen).
  };
}

/**
 * How many replicas must confirm (WAIT) a write that a failover must not lose: 1 with Sentinel
 * (Sentinel promotes the replica with the most replicated data, so that one has it), 0 for a
 * single Redis (WAIT would only time out). Only the audit writer lease asks: see docs/deploy.md.
 */
export function replicasToConfirm(config: Config): number {
  return config.redis.sentinel ? 1 : 0;
}

/** The messages ioredis rejects with when Redis is away, frozen or not serving yet (no error classes for most). */
const UNAVAILABLE_MESSAGES = ['Command timed out', 'Connection is closed.', "Stream isn't writeable", 'Reached the max retries per request limit'];
// READONLY: a primary demoted by a failover (the connection then moves to the new one); NOREPLICAS: min-replicas-to-write unmet.
const UNAVAILABLE_REPLIES = /^(LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|READONLY|NOREPLICAS) /;

/** Whether `err` says Redis could not answer (as opposed to a bug or a refused command): a 503, retry later. */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return err.name === 'MaxRetriesPerRequestError' || UNAVAILABLE_MESSAGES.some((m) => err.message.startsWith(m)) || UNAVAILABLE_REPLIES.test(err.message);
}

/** This process' connections by name, so health and metrics show a Redis outage while it lasts. */
const connections = new Map<string, Redis>();
/** The non-blocking ones: a PING on a connection inside XREAD BLOCK would wait for the BLOCK. */
const probeable = new Set<string>();

export interface RedisHealth {
  /** true when every connection of this process is up and Redis answered a PING in time. */
  up: boolean;
  /** Connections not ready now (connecting, reconnecting after a loss), or not answering (Redis frozen). */
  down: string[];
}

/** How long a health probe waits for Redis' answer: a frozen Redis keeps its sockets looking ready. */
export const HEALTH_PING_DEADLINE_MS = 500;
/** The PING in flight, shared by concurrent probes (while Redis is frozen they would pile up otherwise). */
let pingInFlight: Promise<boolean> | null = null;

function pingWithin(client: Redis, deadlineMs: number): Promise<boolean> {
  pingInFlight ??= new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), deadlineMs);
    client.ping().then(
      () => (clearTimeout(timer), resolve(true)),
      () => (clearTimeout(timer), resolve(false)),
    );
  }).finally(() => (pingInFlight = null));
  return pingInFlight;
}

/**
 * Null when this process has no Redis connection. Active: beside each connection's state, one
 * round trip (PING on a ready non-blocking connection) within HEALTH_PING_DEADLINE_MS, so a frozen
 * Redis shows as down; the probe still answers within the deadline.
 */
export async function redisHealth(deadlineMs = HEALTH_PING_DEADLINE_MS): Promise<RedisHealth | null> {
  if (connections.size === 0) return null;
  const down = [...connections].filter(([, c]) => c.status !== 'ready' && c.status !== 'end').map(([name]) => name);
  const pinged = [...probeable].find((name) => connections.get(name)?.status === 'ready');
  if (pinged && !(await pingWithin(connections.get(pinged)!, deadlineMs))) down.push(`${pinged} (no answer within ${deadlineMs} ms)`);
  return { up: down.length === 0, down };
}

function registerConnectionMetric(): void {
  gauge({
    name: 'pulsevault_redis_connected',
    help: 'Whether this process is connected to Redis (1) or has lost it and is reconnecting (0), by connection.',
    labelNames: ['connection'] as const,
    collect() {
      this.reset();
      for (const [name, c] of connections) if (c.status !== 'end') this.set({ connection: name }, c.status === 'ready' ? 1 : 0);
    },
  });
}

export function createRedis(config: Config, options: ConnectOptions): Redis {
  const opts = redisOptions(config, options);
  const client = newClient(config.redis, opts);
  connections.set(options.name, client);
  if (!options.blocking) probeable.add(options.name);
  else probeable.delete(options.name);
  registerConnectionMetric();
  // Without a listener ioredis prints every reconnect failure; commands already reject, so say it once per outage.
  let down = false;
  client.on('error', (err: Error) => {
    if (down) return;
    down = true;
    options.log?.warn({ redis: options.name, err: err.message }, 'Redis connection lost; retrying');
  });
  client.on('ready', () => {
    if (down) options.log?.info({ redis: options.name }, 'Redis connection restored');
    down = false;
  });
  return client;
}

/** True when Redis (through the Sentinels, when configured) answers PING: one quick attempt, no retries, no lingering connection. */
export async function redisAnswers(redis: Config['redis']): Promise<boolean> {
  const client = newClient(redis, {
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...(redis.sentinel ? { sentinelRetryStrategy: () => null, failoverDetector: false } : {}),
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}
