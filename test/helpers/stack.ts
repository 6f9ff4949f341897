/**
 * Boots the real local stack (`node dist/services/devstack/main.js`, as `npm start`)
 * with a temporary MEDIA_ROOT and a private redis-server, for integration tests.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../../services/devstack/supervisor.js';
import { baseTestEnv, spawnNode } from './node-process.js';
import { startRedis, type TestRedis } from './redis.js';
import { untilAuditWriterReady } from './audit.js';
import { waitFor } from './wait.js';

export { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './secrets.js';

export interface TestStack {
  url: string;
  mediaRoot: string;
  redis: TestRedis;
  /** Every line the stack and its processes wrote to stdout/stderr. */
  output(): string;
  /** Send a signal to the stack and wait for it to exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  process: ChildProcess;
}

export interface StackOptions {
  env?: Record<string, string>;
  redis?: TestRedis;
  /** Wait until every function is ready (GET / says ok). */
  waitReady?: boolean;
  /** Set PUBLIC_URL to the stack's own URL, as k8s/ does: tus answers absolute Locations. */
  publicUrl?: boolean;
}

/** The last warning/error lines of a stack's output (pino level ≥ warn, and anything that is not a JSON log line). */
export function stackWarnings(url: string, output: string, maxLines = 80): string {
  const worthShowing = (line: string) => {
    if (line.trim() === '') return false;
    try {
      const { level } = JSON.parse(line) as { level?: unknown };
      return !(level === 'trace' || level === 'debug' || level === 'info');
    } catch {
      return true;
    }
  };
  // One line per kind (function and message), its latest, with how often it came: an outage's hundreds of
  // identical refusals then leave room for the one line that says why.
  const kinds = new Map<string, { line: string; count: number }>();
  for (const line of output.split('\n').filter(worthShowing)) {
    let kind = line;
    try {
      const { function: fn, msg } = JSON.parse(line) as { function?: unknown; msg?: unknown };
      kind = `${String(fn)}\u0000${String(msg)}`;
    } catch {
      // not a JSON log line: shown as it is
    }
    const seen = kinds.get(kind);
    kinds.delete(kind); // re-inserted last: the Map keeps the order of latest occurrence
    kinds.set(kind, { line, count: (seen?.count ?? 0) + 1 });
  }
  const lines = [...kinds.values()].slice(-maxLines).map(({ line, count }) => (count > 1 ? `(${count}×, the latest:) ${line}` : line));
  return `--- local stack at ${url}: last ${lines.length} kinds of warning/error lines ---\n${lines.join('\n')}`;
}

/** Ready in ~10 s on a quiet 2-core machine: 18× that, for a machine running two suites at once. Hooks that start a stack allow this plus a minute. */
export const STACK_START_DEADLINE_MS = 180_000;

/** Stacks of this test file still running: test/setup/stack-diagnostics.ts prints their warnings when a test fails. */
export const liveStacks = new Set<TestStack>();

export async function startStack(options: StackOptions = {}): Promise<TestStack> {
  const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-media-'));
  const redis = options.redis ?? (await startRedis());
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { child, output, exited } = spawnNode(['dist/services/devstack/main.js'], {
    ...baseTestEnv(),
    SECRETS_DIR: path.join(mediaRoot, 'no-secrets'),
    PORT: String(port),
    MEDIA_ROOT: mediaRoot,
    REDIS_URL: redis.url,
    SHUTDOWN_TIMEOUT_SECONDS: '5',
    ...(options.publicUrl ? { PUBLIC_URL: url } : {}),
    ...options.env,
  });

  const stack: TestStack = {
    url,
    mediaRoot,
    redis,
    process: child,
    output,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      liveStacks.delete(stack);
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      if (!options.redis) await redis.close();
      rmSync(mediaRoot, { recursive: true, force: true });
      return code;
    },
  };

  liveStacks.add(stack);
  if (options.waitReady !== false) {
    try {
      await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`stack exited with ${child.exitCode}:\n${output()}`);
        const res = await fetch(`${url}/`).catch(() => null);
        return res?.ok && ((await res.json()) as { status: string }).status === 'ok';
      }, STACK_START_DEADLINE_MS, 'the local stack to be ready');
      // The audit writer is a service without a health port: ready once it holds its lease.
      await untilAuditWriterReady(options.env?.REDIS_URL ?? redis.url);
    } catch (err) {
      // A stack that never came up fails in a hook, where no test's diagnostics run: say why here.
      console.error(stackWarnings(url, output()));
      await stack.stop('SIGKILL');
      throw err;
    }
  }
  return stack;
}
