/**
 * `npm start` as a user runs it (npm → node dist/services/devstack/main.js → the
 * functions, services, nginx and its own redis-server), with real processes:
 * it stops cleanly on SIGINT or SIGTERM sent to the terminal's process group, to
 * npm or to the devstack; when the devstack or npm is SIGKILLed nothing it started
 * lives on (no orphan keeps a port). In development with no secret configured it
 * keeps the ones it generated under MEDIA_ROOT: a second run has the same audit
 * pseudonym for the same user, and the first run's dev token still works.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { DEV_USER_ID } from '../services/devstack/dev-auth.js';
import { devSecretFile, localRedisUrlFile } from '../services/devstack/local-defaults.js';
import { freePort } from '../services/devstack/supervisor.js';
import { childPids } from './helpers/processes.js';
import { waitFor } from './helpers/wait.js';

/** Ready in ~10 s on a quiet 2-core machine; stopped in ~3 s. */
const READY_DEADLINE = 180_000;
const STOP_DEADLINE = 60_000;

interface Started {
  npm: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  port: number;
  devstack: number;
  /** Every process under npm once the stack was ready (functions, services, tethers, nginx, redis-server). */
  tree: number[];
}

const roots: string[] = [];
const running = new Set<Started>();

function descendants(pid: number): number[] {
  const children = childPids(pid);
  return [...children, ...children.flatMap(descendants)];
}
const alive = (pid: number) => existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });

function newMediaRoot(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-lifecycle-'));
  roots.push(dir);
  return dir;
}

/** `npm start` (built already: --ignore-scripts skips the prestart build) in its own process group, as a terminal runs it. */
async function npmStart(mediaRoot: string): Promise<Started> {
  const port = await freePort();
  // As a user's shell would: no secret, no REDIS_URL, development.
  const npm = spawn('npm', ['start', '--ignore-scripts'], {
    cwd: path.resolve('.'),
    detached: true,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port), MEDIA_ROOT: mediaRoot, SECRETS_DIR: '/nonexistent', SHUTDOWN_TIMEOUT_SECONDS: '5', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  npm.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  npm.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => npm.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : null))));
  const started: Started = { npm, output: () => out, exited, port, devstack: 0, tree: [] };
  running.add(started);
  await waitFor(() => {
    if (npm.exitCode !== null) throw new Error(`npm start exited with ${npm.exitCode}:\n${out}`);
    return /PulseVault local stack ready/.test(out) && /PULSEVAULT_DEV_TOKEN=/.test(out);
  }, READY_DEADLINE, 'npm start to be ready', 200);
  started.devstack = childPids(npm.pid!, 'devstack/main.js')[0]!;
  started.tree = descendants(npm.pid!);
  return started;
}

/** Everything it started is gone, PORT is free, and its output has no warning or error. */
async function expectAllStopped(s: Started, { clean }: { clean: boolean }): Promise<void> {
  await waitFor(() => s.tree.every((pid) => !alive(pid)), STOP_DEADLINE, 'every process of the stack to exit').catch((err: Error) => {
    throw new Error(`${err.message}; still running: ${s.tree.filter(alive).map((pid) => `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`).join('; ')}`);
  });
  expect(await listening(s.port)).toBe(false);
  running.delete(s);
  if (!clean) return;
  expect(s.output()).toContain('local stack stopped');
  const complaints = s.output().split('\n').filter((line) => /"level":"(warn|error|fatal)"|Warning|Error/.test(line));
  expect(complaints).toEqual([]);
}

afterAll(async () => {
  for (const s of running) {
    try {
      process.kill(-s.npm.pid!, 'SIGKILL');
    } catch {
      // gone
    }
    for (const pid of s.tree) if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  for (const dir of roots) rmSync(dir, { recursive: true, force: true });
});

describe('npm start stops as one process tree', () => {
  it('runs every child under npm, with its own Redis (not localhost:6379) whose URL the CLI finds', async () => {
    const mediaRoot = newMediaRoot();
    const s = await npmStart(mediaRoot);
    expect(s.tree.length).toBeGreaterThanOrEqual(9);
    const redisUrl = readFileSync(localRedisUrlFile(mediaRoot), 'utf8').trim();
    expect(redisUrl).toMatch(/^redis:\/\/127\.0\.0\.1:\d+\/0$/);
    expect(redisUrl).not.toContain(':6379/');
    process.kill(-s.npm.pid!, 'SIGINT');
    await expectAllStopped(s, { clean: true });
    expect(existsSync(localRedisUrlFile(mediaRoot))).toBe(false);
  }, READY_DEADLINE + STOP_DEADLINE);

  const ways: [string, (s: Started) => void][] = [
    ['SIGINT to npm', (s) => s.npm.kill('SIGINT')],
    ['SIGTERM to npm', (s) => s.npm.kill('SIGTERM')],
    ['SIGINT to the devstack', (s) => process.kill(s.devstack, 'SIGINT')],
    ['SIGTERM to the devstack', (s) => process.kill(s.devstack, 'SIGTERM')],
  ];
  it.each(ways)('stops cleanly on %s', async (_way, send) => {
    const s = await npmStart(newMediaRoot());
    send(s);
    await expectAllStopped(s, { clean: true });
    expect(await s.exited).not.toBeNull();
  }, READY_DEADLINE + STOP_DEADLINE);

  it('leaves no process behind when the devstack is SIGKILLed (each child stops with its parent)', async () => {
    const s = await npmStart(newMediaRoot());
    process.kill(s.devstack, 'SIGKILL');
    await expectAllStopped(s, { clean: false });
  }, READY_DEADLINE + STOP_DEADLINE);

  it('stops when npm is SIGKILLed (the devstack notices its launcher is gone)', async () => {
    const s = await npmStart(newMediaRoot());
    s.npm.kill('SIGKILL');
    await expectAllStopped(s, { clean: false });
    expect(s.output()).toContain('"signal":"npm exited"');
  }, READY_DEADLINE + STOP_DEADLINE);
});

describe('development secrets', () => {
  it('are generated once under MEDIA_ROOT and kept: the same audit pseudonym, a valid dev token and the same media KEK after a restart', async () => {
    const mediaRoot = newMediaRoot();
    const pseudonymsIn = (dir: string): string[] =>
      readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .flatMap((e) => [...readFileSync(path.join(e.parentPath, e.name), 'utf8').matchAll(/"userId":"(sub-[0-9a-f]+)"/g)].map((m) => m[1]!));
    const signNothing = async (s: Started, token: string) =>
      fetch(`http://127.0.0.1:${s.port}/media/sign`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ videoId: randomUUID(), path: 'original.mp4' }),
      });

    const first = await npmStart(mediaRoot);
    expect(first.output()).toMatch(/HMAC_SECRET is not set: generated a development one, kept under MEDIA_ROOT/);
    // The media KEK too (encryption at rest works with no setup), said once at start, never its value.
    expect(first.output().match(/MEDIA_KEK is not set: generated a development one/g)).toHaveLength(1);
    const kek = readFileSync(devSecretFile(mediaRoot, 'MEDIA_KEK'), 'utf8').trim();
    expect(first.output()).not.toContain(kek.split(':')[1]);
    const token = /PULSEVAULT_DEV_TOKEN=(\S+)/.exec(first.output())![1]!;
    expect((await signNothing(first, token)).status).toBe(404); // audited as a denial, with the user's pseudonym
    const secret = readFileSync(devSecretFile(mediaRoot, 'HMAC_SECRET'), 'utf8').trim();
    first.npm.kill('SIGINT');
    await expectAllStopped(first, { clean: true });

    const second = await npmStart(mediaRoot);
    expect(second.output()).toMatch(/HMAC_SECRET is not set: using the development one kept under MEDIA_ROOT/);
    expect(readFileSync(devSecretFile(mediaRoot, 'HMAC_SECRET'), 'utf8').trim()).toBe(secret);
    expect(second.output()).toMatch(/MEDIA_KEK is not set: using the development one kept under MEDIA_ROOT/);
    expect(readFileSync(devSecretFile(mediaRoot, 'MEDIA_KEK'), 'utf8').trim()).toBe(kek);
    // The first run's token is still good (the dev JWT secret is kept too).
    expect((await signNothing(second, token)).status).toBe(404);
    second.npm.kill('SIGINT');
    await expectAllStopped(second, { clean: true });

    const pseudonyms = pseudonymsIn(path.join(mediaRoot, 'audit'));
    expect(pseudonyms.length).toBeGreaterThanOrEqual(2);
    expect(new Set(pseudonyms)).toEqual(new Set([subjectPseudonym(secret, DEV_USER_ID)]));
  }, 2 * (READY_DEADLINE + STOP_DEADLINE));
});
