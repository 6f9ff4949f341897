/**
 * Redis for the local stack: use the configured server when it answers,
 * otherwise start a `redis-server` child with its data under MEDIA_ROOT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { Config } from '../../shared/platform/config.js';
import type { Logger } from '../../shared/platform/log.js';

export interface LocalRedis {
  /** URL the children get as REDIS_URL. */
  url: string;
  stop(): Promise<void>;
}

/** True when a Redis server answers PING at `url` (one quick attempt, no retries). */
export async function redisAnswers(url: string, password: string | null = null): Promise<boolean> {
  const client = new Redis(url, {
    ...(password ? { password } : {}),
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
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

export async function ensureRedis(config: Config, log: Logger): Promise<LocalRedis> {
  const url = config.redis.url ?? `redis://${config.redis.host}:${config.redis.port}/${config.redis.db}`;
  if (await redisAnswers(url, config.redis.password)) {
    log.info({ redis: new URL(url).host }, 'using the configured Redis');
    return { url, stop: async () => {} };
  }
  const { hostname, port } = new URL(url);
  if (!['localhost', '127.0.0.1', '::1', '[::1]'].includes(hostname)) {
    throw new Error(`Redis at ${hostname}:${port} does not answer (only a local one is started automatically)`);
  }
  const dir = path.join(config.mediaRoot, 'redis');
  mkdirSync(dir, { recursive: true });
  const args = ['--port', port || '6379', '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', ''];
  if (config.redis.password) args.push('--requirepass', config.redis.password);
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', (err) => log.error({ err: err.message }, 'could not start redis-server (is it installed?)'));
  const deadline = Date.now() + 10_000;
  while (!(await redisAnswers(url, config.redis.password))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('redis-server did not start; install it (apt-get install redis-server) or set REDIS_URL');
    await new Promise((r) => setTimeout(r, 100));
  }
  log.warn({ redis: `127.0.0.1:${port || 6379}`, dataDir: dir }, 'no Redis answered: started a redis-server child for the local stack');
  return {
    url,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
