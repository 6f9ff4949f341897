/** A real redis-server on a free port, private to one test file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { redisAnswers } from '../../shared/platform/redis.js';
import { freePort } from '../../services/devstack/supervisor.js';
import { waitFor } from './wait.js';

export interface TestRedis {
  url: string;
  port: number;
  client(): Redis;
  /** Stop the server, keeping its data dir (see start). */
  stop(): Promise<void>;
  /** Start it again on the same port and data dir (after stop). */
  start(): Promise<void>;
  /** Stop it and remove its data. */
  close(): Promise<void>;
  /** Send the server a signal: SIGSTOP freezes it (connections stay open, nothing answers), SIGCONT thaws it. */
  signal(signal: NodeJS.Signals): void;
  /** Kill it outright (SIGKILL): without persistence its data is gone; start() brings it back empty. */
  kill(): Promise<void>;
}

/**
 * `password`: requirepass, as k8s/redis.yaml runs it (clients then authenticate like the functions do).
 * `args`: more redis-server arguments (a replica's --replicaof, test/helpers/sentinel.ts).
 */
export async function startRedis(options: { appendonly?: boolean; password?: string; args?: string[] } = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | null = null;
  const clients: Redis[] = [];

  async function start(): Promise<void> {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', options.appendonly ? 'yes' : 'no'];
    if (options.password) args.push('--requirepass', options.password);
    args.push(...(options.args ?? []));
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const redis = { url, host: '127.0.0.1', port, password: options.password ?? null, db: 0, commandTimeoutMs: 1_000, sentinel: null };
    await waitFor(() => redisAnswers(redis), 10_000, 'redis-server to start');
  }

  async function stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      if (signal === 'SIGTERM') c.kill('SIGCONT'); // a frozen server must wake to hear SIGTERM
      c.kill(signal);
    });
  }

  await start();
  return {
    url,
    port,
    client() {
      const c = new Redis(url, options.password ? { password: options.password } : {});
      c.on('error', () => {}); // a test that stops the server expects these clients to lose it
      clients.push(c);
      return c;
    },
    start,
    stop: () => stop(),
    kill: () => stop('SIGKILL'),
    signal(signal) {
      child?.kill(signal);
    },
    async close() {
      for (const c of clients.splice(0)) c.disconnect();
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
