/**
 * The Redis connections of shared/platform/redis.ts against a real redis-server:
 * request-path commands have a deadline and fail as a 503, blocking readers keep
 * their long BLOCK yet never hang on a frozen server.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../shared/platform/config.js';
import { toHttpError } from '../shared/platform/errors.js';
import { createRedis, type Redis } from '../shared/platform/redis.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const DEADLINE_MS = 300;
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-redis-deadlines-'));
let server: TestRedis;
let commands: Redis;
let blocking: Redis;

beforeAll(async () => {
  server = await startRedis();
  const config = loadConfig({ HMAC_SECRET: 'x'.repeat(32), MEDIA_ROOT: tmp, REDIS_URL: server.url, REDIS_COMMAND_TIMEOUT_MS: String(DEADLINE_MS) }, { secretsDir: path.join(tmp, 'none') });
  commands = createRedis(config, { name: 'test' });
  blocking = createRedis(config, { name: 'test:read', blocking: true });
  await Promise.all([commands.ping(), blocking.ping()]);
});

afterAll(async () => {
  server?.signal('SIGCONT');
  commands?.disconnect();
  blocking?.disconnect();
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/**
 * Bounds on how long a frozen or absent Redis holds a call: 10× what it takes on a quiet machine
 * (the deadline), so a busy one passes, yet far below a hang or a retry loop.
 */
const BOUND_MS = 10 * DEADLINE_MS;

/** A request-path command fails within its deadline (BOUND_MS on a busy machine), mapped to a 503. */
async function expectRedisUnavailableWithinDeadline(): Promise<void> {
  const started = Date.now();
  const err = await commands.get('anything').then(
    () => null,
    (e: unknown) => e,
  );
  expect(Date.now() - started).toBeLessThan(BOUND_MS);
  expect(toHttpError(err)).toMatchObject({ status: 503, code: 'redis_unavailable', headers: { 'Retry-After': '1' } });
}

it('a blocking read still waits its whole BLOCK, far beyond the command deadline', async () => {
  const started = Date.now();
  const read = blocking.xread('BLOCK', 1_500, 'STREAMS', 'deadline-test', '$');
  // Awaited too: the next test freezes Redis, and an XADD whose reply was still on its way would then time out unhandled.
  const added = new Promise((resolve) => setTimeout(resolve, 1_000)).then(() => commands.xadd('deadline-test', '*', 'n', '1'));
  const reply = (await read) as [string, [string, string[]][]][] | null;
  await added;
  expect(reply?.[0]?.[1]).toHaveLength(1);
  expect(Date.now() - started).toBeGreaterThanOrEqual(900);
});

it('while Redis is frozen, a command fails after its deadline as 503 redis_unavailable, and a blocking read ends empty', async () => {
  server.signal('SIGSTOP');
  try {
    await expectRedisUnavailableWithinDeadline();

    const readStarted = Date.now();
    expect(await blocking.xread('BLOCK', 200, 'STREAMS', 'deadline-test', '$')).toBeNull();
    expect(Date.now() - readStarted).toBeLessThan(200 + BOUND_MS);
  } finally {
    server.signal('SIGCONT');
  }
  expect(await commands.ping()).toBe('PONG');
});

it('while Redis is down, a command fails within its deadline as 503 redis_unavailable', async () => {
  await server.kill();
  try {
    await expectRedisUnavailableWithinDeadline();
  } finally {
    await server.start();
  }
});
