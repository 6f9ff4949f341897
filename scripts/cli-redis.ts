/** Redis for a `pulsevault` command that needs it (requeue, retention). */
import type { Config } from '../shared/platform/config.js';
import { createRedis, type Redis } from '../shared/platform/redis.js';

/**
 * A connection that answers, or null after one line on stderr (the caller exits 69, EX_UNAVAILABLE):
 * without Redis every video would fail one by one. Host and port only: a URL may hold a password.
 */
export async function redisOrExplain(config: Config, command: string): Promise<Redis | null> {
  const redis = createRedis(config, { name: command });
  if (await redis.ping().then(() => true, () => false)) return redis;
  const where = config.redis.url ? new URL(config.redis.url).host : `${config.redis.host}:${config.redis.port}`;
  process.stderr.write(`pulsevault ${command}: Redis at ${where} does not answer; is the stack running (npm start), is REDIS_URL right?\n`);
  redis.disconnect();
  return null;
}
