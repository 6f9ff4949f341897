/**
 * `pulsevault webhooks list`: the webhook endpoints (never a secret) with their dead-letter counts.
 * `pulsevault webhooks replay [--endpoint <id>]`: every dead-lettered delivery (of one endpoint, or
 * all) is due again now with its retry schedule restarted; the sender delivers it with its
 * original webhook-id, and removes the dead letter once it is delivered.
 */
import { redisOrExplain } from '../cli-redis.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { isUuid } from '../../shared/platform/ids.js';
import { EndpointStore } from '../../shared/webhooks/endpoints.js';
import { webhooksDir } from '../../shared/webhooks/events.js';
import { deadLetterCounts, replayDeadLetters } from '../../shared/webhooks/sender.js';

export const summary = 'webhook endpoints and dead letters: list | replay [--endpoint <id>]';
const USAGE = 'usage: pulsevault webhooks list | pulsevault webhooks replay [--endpoint <id>]\n';

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const config = loadConfigOrExit({ require: [] });
  const dir = webhooksDir(config.videoDir);
  if (sub === 'list' && rest.length === 0) {
    const dead = await deadLetterCounts(dir);
    const endpoints = (await new EndpointStore(dir).views()).map((e) => ({ ...e, deadLetters: dead[e.id] ?? 0 }));
    process.stdout.write(`${JSON.stringify({ endpoints })}\n`);
    return 0;
  }
  if (sub === 'replay' && (rest.length === 0 || (rest.length === 2 && rest[0] === '--endpoint' && isUuid(rest[1]!)))) {
    const redis = await redisOrExplain(config, 'webhooks replay');
    if (!redis) return 69; // EX_UNAVAILABLE
    try {
      process.stdout.write(`${JSON.stringify({ replayed: await replayDeadLetters(redis, dir, rest[1] ?? null) })}\n`);
      return 0;
    } finally {
      redis.disconnect();
    }
  }
  process.stderr.write(USAGE);
  return 64;
}
