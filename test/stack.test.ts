/** `npm start`'s local stack as real processes: health, metrics, routing, restarts, shutdown, Redis. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FUNCTIONS } from '../services/gateway/routes.js';
import { freePort } from '../services/devstack/supervisor.js';
import { childPids } from './helpers/processes.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

type Health = { status: string; functions: Record<string, { ready: number; replicas: { state: string; restarts: number; pid: number | null }[] }> };
const health = async (s: TestStack) => (await (await fetch(`${s.url}/`)).json()) as Health;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('local stack', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ env: { LOCAL_REPLICAS: 'stream=2' } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('GET / lists every function of stack.yml as ready', async () => {
    const h = await health(stack);
    expect(h.status).toBe('ok');
    expect(Object.keys(h.functions).sort()).toEqual([...FUNCTIONS].sort());
    for (const fn of FUNCTIONS) expect(h.functions[fn]!.ready, fn).toBe(fn === 'stream' ? 2 : 1);
  });

  it.each([
    ['POST', '/uploads', 'tus-upload'],
    ['HEAD', '/uploads/0123456789abcdef', 'tus-upload'],
    ['POST', '/uploads/finalize', 'finalize'],
    ['POST', '/media/sign', 'sign'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/metadata', 'metadata'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/renditions', 'metadata'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/hls/master.m3u8', 'stream'],
    ['GET', '/function/transcoder/_/health', 'transcoder'],
  ])('%s %s is answered by %s', async (method, path, fn) => {
    const res = await fetch(`${stack.url}${path}`, { method });
    expect(res.headers.get('x-pulsevault-function')).toBe(fn);
    // The function's own header proves it answered; the gateway's own failures carry none.
    expect([502, 503]).not.toContain(res.status);
  });

  it('GET /metrics aggregates every process with a replica label', async () => {
    await fetch(`${stack.url}/media/sign`, { method: 'POST' });
    const text = await (await fetch(`${stack.url}/metrics`)).text();
    expect(text.match(/^# HELP http_request_duration_seconds /gm)).toHaveLength(1);
    for (const replica of ['sign-0', 'stream-0', 'stream-1', 'tus-upload-0', 'gateway-0', 'audit-writer-0', 'queue-connector-0']) expect(text).toContain(`replica="${replica}"`);
    expect(text).toMatch(/http_request_duration_seconds_count\{[^}]*function="sign"[^}]*\} \d+/);
  });

  it('restarts a crashed function process, as Kubernetes would', async () => {
    const before = (await health(stack)).functions.sign!.replicas[0]!;
    process.kill(before.pid!, 'SIGKILL');
    const after = await waitFor(async () => {
      const r = (await health(stack)).functions.sign!.replicas[0]!;
      return r.state === 'ready' && r.restarts === 1 && r.pid !== before.pid ? r : null;
    }, 30_000, 'sign to restart');
    expect(after.restarts).toBe(1);
    expect(stack.output()).toMatch(/"process":"sign".*process exited; restarting/);
    const res = await fetch(`${stack.url}/media/sign`, { method: 'POST' });
    expect(res.headers.get('x-pulsevault-function')).toBe('sign');
  });
});

describe('local stack lifecycle', () => {
  it('starts a redis-server child when none answers, and SIGTERM stops every child', async () => {
    const redisPort = await freePort();
    const stack = await startStack({ env: { REDIS_URL: `redis://127.0.0.1:${redisPort}` } });
    expect(stack.output()).toContain('started a redis-server child');
    const pids = Object.values((await health(stack)).functions).flatMap((f) => f.replicas.map((r) => r.pid!));
    expect(pids.every(alive)).toBe(true);
    const redisUp = await fetch(`http://127.0.0.1:${redisPort}`).then(() => true, (e: { cause?: { code?: string } }) => e.cause?.code !== 'ECONNREFUSED');
    expect(redisUp).toBe(true);
    expect(await stack.stop('SIGTERM')).toBe(0);
    expect(pids.filter(alive)).toEqual([]);
    const redisGone = await fetch(`http://127.0.0.1:${redisPort}`).then(() => false, (e: { cause?: { code?: string } }) => e.cause?.code === 'ECONNREFUSED');
    expect(redisGone).toBe(true);
  });

  it('a supervisor killed outright leaves no orphan processes behind', async () => {
    const stack = await startStack();
    const pids = Object.values((await health(stack)).functions).flatMap((f) => f.replicas.map((r) => r.pid!));
    stack.process.kill('SIGKILL');
    await waitFor(() => pids.every((pid) => !alive(pid)), 30_000, 'every function process to stop itself');
    await stack.stop();
  });

  it.each(['SIGINT', 'SIGKILL'] as const)('%s while the functions are still starting leaves no orphan processes behind', async (signal) => {
    const stack = await startStack({ waitReady: false });
    // The supervisor launches every process at once: as soon as one child exists, all do, none ready yet.
    const pids = await waitFor(() => {
      const children = childPids(stack.process.pid!);
      return children.length > 0 ? children : null;
    }, 30_000, 'the first child processes');
    stack.process.kill(signal);
    await waitFor(() => pids.every((pid) => !alive(pid)), 30_000, 'every child process to stop');
    await stack.stop();
  });

  it('refuses to start on a bad variable with one line naming it', async () => {
    const run = promisify(execFile);
    const err = await run(process.execPath, ['dist/services/devstack/main.js'], {
      env: { PATH: process.env.PATH, NODE_ENV: 'test', HMAC_SECRET: TEST_HMAC_SECRET, PORT: 'abc', SECRETS_DIR: '/nonexistent' },
    }).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(78);
    expect(err?.stderr.trim()).toMatch(/^invalid configuration: PORT must be an integer \(got "abc"\)$/);
  });

  it('refuses to start in production without HMAC_SECRET (development secrets are never made there)', async () => {
    const run = promisify(execFile);
    const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-no-secret-'));
    const err = await run(process.execPath, ['dist/services/devstack/main.js'], {
      env: { PATH: process.env.PATH, NODE_ENV: 'production', MEDIA_ROOT: mediaRoot, SECRETS_DIR: '/nonexistent' },
    }).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(78);
    expect(err?.stderr.trim()).toMatch(/^invalid configuration: HMAC_SECRET is required/);
    expect(readdirSync(mediaRoot)).toEqual([]);
    rmSync(mediaRoot, { recursive: true });
  });
});
