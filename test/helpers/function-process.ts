/**
 * One compiled function as its own process (as one pod replica), without the
 * whole stack: for tests that need several replicas side by side, a particular
 * environment, or to kill and restart a function.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../../services/devstack/supervisor.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './stack.js';
import { waitFor } from './wait.js';

export interface FunctionProcess {
  url: string;
  process: ChildProcess;
  output(): string;
  /** Resolves with the exit code (null when killed by a signal) once the process has exited. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startFunctionProcess(name: string, env: Record<string, string>, options: { waitReady?: boolean } = {}): Promise<FunctionProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, ['dist/templates/pulsevault-node20/runtime/main.js', path.join('dist/functions', name, 'handler.js')], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_ENV: 'test',
      LOG_LEVEL: 'info',
      HMAC_SECRET: TEST_HMAC_SECRET,
      AUDIT_SIGNING_KEY: TEST_AUDIT_KEY,
      SECRETS_DIR: '/nonexistent',
      FUNCTION_NAME: name,
      HOST: '127.0.0.1',
      PORT: String(port),
      SHUTDOWN_TIMEOUT_SECONDS: '2',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const fp: FunctionProcess = {
    url,
    process: child,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  if (options.waitReady !== false) {
    try {
      await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${out}`);
        return (await fetch(`${url}/_/health`).catch(() => null))?.ok;
      }, 30_000, `${name} to be ready`);
    } catch (err) {
      await fp.stop('SIGKILL');
      throw err;
    }
  }
  return fp;
}
