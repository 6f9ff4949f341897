/** Redis connections (ioredis) from the configuration. */
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

export function redisOptions(config: Config, { name, blocking = false }: ConnectOptions): RedisOptions {
  const deadline = config.redis.commandTimeoutMs;
  return {
    connectionName: `pulsevault:${name}`,
    ...(config.redis.password ? { password: config.redis.password } : {}),
    ...(config.redis.url ? {} : { db: config.redis.db }),
    connectTimeout: 2_000,
    // Request paths fail fast when Redis is away (one retry) or frozen (the deadline): the caller answers 503.
    // Blocking readers wait for Redis to come back, and get no command deadline (it would cut their BLOCK
    // short); a BLOCK unanswered for `deadline` past its own timeout ends empty and is simply issued again.
    ...(blocking
      ? { maxRetriesPerRequest: null, blockingTimeout: deadline, blockingTimeoutGrace: deadline }
      : { maxRetriesPerRequest: 1, commandTimeout: deadline }),
    // Commands issued while connecting wait in the queue, still bounded by the deadline above.
    enableOfflineQueue: true,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 2_000),
    lazyConnect: false,
    // No enableAutoPipelining: with commandTimeout, a command that times out inside ioredis 5's auto-pipeline
    // also rejects a promise nobody holds (an unhandled rejection, seen in CI while Redis was frozen).
  };
}

/** The messages ioredis rejects with when Redis is away, frozen or not serving yet (no error classes for most). */
const UNAVAILABLE_MESSAGES = ['Command timed out', 'Connection is closed.', "Stream isn't writeable", 'Reached the max retries per request limit'];
const UNAVAILABLE_REPLIES = /^(LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN) /;

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
  const client = config.redis.url ? new Redis(config.redis.url, opts) : new Redis({ ...opts, host: config.redis.host, port: config.redis.port });
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
