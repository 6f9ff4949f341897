/**
 * Redis for the local stack: through the configured Sentinels when REDIS_SENTINELS is set;
 * else its own `redis-server` child unless the configuration names one (then that one, or a
 * child on its local port when none answers there), data under MEDIA_ROOT/redis either way.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../shared/platform/config.js';
import type { Logger } from '../../shared/platform/log.js';
import { localRedisUrlFile } from './local-defaults.js';
import { freePort } from './supervisor.js';
import { spawnTethered } from './tethered.js';
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
  const redis = await spawnRedisServer(config, url, Number(port || 6379));
  log.warn({ redis: `127.0.0.1:${port || 6379}`, dataDir: localRedisDir(config) }, 'no Redis answered: started a redis-server child for the local stack');
  return redis;
}

/** Where the local stack's Redis keeps its data. */
export const localRedisDir = (config: Pick<Config, 'mediaRoot'>) => path.join(config.mediaRoot, 'redis');

/**
 * The local stack's own redis-server: on a free port (never another program's localhost:6379),
 * its data under MEDIA_ROOT/redis (so videos and queue survive a restart), its URL written to
 * MEDIA_ROOT/redis/url while it runs, where the `pulsevault` CLI finds it.
 */
export async function startOwnRedis(config: Config, log: Logger): Promise<LocalRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}/0`;
  const redis = await spawnRedisServer(config, url, port);
  const urlFile = localRedisUrlFile(config.mediaRoot);
  writeFileSync(urlFile, `${url}\n`, { mode: 0o600 });
  log.info({ redis: `127.0.0.1:${port}`, dataDir: localRedisDir(config) }, 'started the local stack\'s own redis-server (set REDIS_URL to use a shared one)');
  return {
    url,
    stop: async () => {
      rmSync(urlFile, { force: true });
      await redis.stop();
    },
  };
}

async function spawnRedisServer(config: Config, url: string, port: number): Promise<LocalRedis> {
  const dir = localRedisDir(config);
  mkdirSync(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', ''];
  if (config.redis.password) args.push('--requirepass', config.redis.password);
  // Tethered: it stops with the devstack even when the devstack is SIGKILLed (./tethered.ts).
  const child: ChildProcess = spawnTethered('redis-server', args, 'SIGTERM', process.env, 'ignore');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await redisAnswers({ ...config.redis, url }))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('redis-server did not start; install it (apt-get install redis-server) or set REDIS_URL');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
