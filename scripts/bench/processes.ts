/**
 * Reference servers and load workers run as their own Node processes (as the
 * functions they are compared with do), never inside the harness's event loop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { WorkerResult } from './workers/barrier.js';
import { ROOT } from './tools.js';

type WorkerScript = 'upload-server' | 'json-server' | 'audit-recorder' | 'fsync-appender';

const entry = (script: WorkerScript) => path.join(ROOT, 'dist/scripts/bench/workers', `${script}.js`);

/** The command a reader would run to start the worker. */
export const workerCommand = (script: WorkerScript, args: string[]) => `node ${path.relative(ROOT, entry(script))} ${args.map((a) => (/^[\w./:-]+$/.test(a) ? a : `'${a}'`)).join(' ')}`.trim();

function launch(script: WorkerScript, args: string[], env: Record<string, string> = {}): { child: ChildProcess; lines: AsyncIterator<string>; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [entry(script), ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return { child, lines, exited };
}

async function nextLine(lines: AsyncIterator<string>, script: string): Promise<string> {
  const next = await lines.next();
  if (next.done) throw new Error(`${script} exited before answering`);
  return next.value;
}

export interface ServerWorker {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Start a reference server; resolves once it listens. */
export async function startServerWorker(script: 'upload-server' | 'json-server', args: string[]): Promise<ServerWorker> {
  const { child, lines, exited } = launch(script, args);
  const { port } = JSON.parse(await nextLine(lines, script)) as { port: number };
  return {
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Run several workers that start together: each prints `ready`, then all get
 * `go` at once. Resolves with the aggregate rate over the span from the first
 * start to the last finish.
 */
export async function runTogether(script: 'audit-recorder' | 'fsync-appender', argsPerWorker: string[][], env: Record<string, string> = {}): Promise<{ count: number; seconds: number; perSecond: number }> {
  const workers = argsPerWorker.map((args) => launch(script, args, env));
  try {
    for (const w of workers) {
      const line = await nextLine(w.lines, script);
      if (line !== 'ready') throw new Error(`${script} said ${line}`);
    }
    for (const w of workers) w.child.stdin!.write('go\n');
    const results = await Promise.all(workers.map(async (w) => JSON.parse(await nextLine(w.lines, script)) as WorkerResult));
    const codes = await Promise.all(workers.map((w) => w.exited));
    if (codes.some((c) => c !== 0)) throw new Error(`${script} exited with ${codes.join(', ')}`);
    const count = results.reduce((n, r) => n + r.count, 0);
    const seconds = (Math.max(...results.map((r) => r.endMs)) - Math.min(...results.map((r) => r.startMs))) / 1000;
    return { count, seconds, perSecond: count / seconds };
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  }
}
