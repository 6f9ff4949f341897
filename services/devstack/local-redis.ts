/**
 * Redis for the local stack: through the configured Sentinels when REDIS_SENTINELS is set,
 * else the configured server when it answers, otherwise a `redis-server` child with its data
 * under MEDIA_ROOT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../shared/platform/config.js';
import type { Logger } from '../../shared/platform/log.js';
import { redisAddress, redisAnswers } from '../../shared/platform/redis.js';

export interface LocalRedis {
  /** URL the children get as REDIS_URL. */
  url: string;
  stop(): Promise<void>;
}

/** A given Sentinel setup: it must answer now (the stack never starts Sentinels of its own). */
async function useSentinels(config: Config, log: Logger): Promise<LocalRedis> {
  if (!(await redisAnswers(config.redis))) {
    throw new Error(`no Redis primary answers through ${redisAddress(config.redis)} (check REDIS_SENTINELS, REDIS_SENTINEL_NAME and the passwords)`);
  }
  log.info({ redis: redisAddress(config.redis) }, 'using the configured Redis through Sentinel');
  // The children connect through REDIS_SENTINELS too (it wins over REDIS_URL), inherited from this environment.
  return { url: config.redis.url ?? `redis://${config.redis.host}:${config.redis.port}/${config.redis.db}`, stop: async () => {} };
}

export async function ensureRedis(config: Config, log: Logger): Promise<LocalRedis> {
  if (config.redis.sentinel) return useSentinels(config, log);
  const url = config.redis.url ?? `redis://${config.redis.host}:${config.redis.port}/${config.redis.db}`;
  if (await redisAnswers({ ...config.redis, url })) {
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
  while (!(await redisAnswers({ ...config.redis, url }))) {
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
