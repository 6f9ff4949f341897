/**
 * One compiled function as its own process (as one pod replica), without the
 * whole stack: for tests that need several replicas side by side, a particular
 * environment, or to kill and restart a function.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../../services/devstack/supervisor.js';
import { baseTestEnv, spawnNode } from './node-process.js';
import { waitFor } from './wait.js';

export interface FunctionProcess {
  url: string;
  process: ChildProcess;
  output(): string;
  /** Resolves with the exit code (null when killed by a signal) once the process has exited. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `options.handler`: a handler module to run instead of the compiled dist/functions/<name>/handler.js. */
export async function startFunctionProcess(name: string, env: Record<string, string>, options: { waitReady?: boolean; handler?: string } = {}): Promise<FunctionProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { child, output, exited } = spawnNode(['dist/templates/pulsevault-node20/runtime/main.js', options.handler ?? path.join('dist/functions', name, 'handler.js')], {
    ...baseTestEnv(),
    FUNCTION_NAME: name,
    PORT: String(port),
    SHUTDOWN_TIMEOUT_SECONDS: '2',
    ...env,
  });
  const fp: FunctionProcess = {
    url,
    process: child,
    output,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  if (options.waitReady !== false) {
    try {
      await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${output()}`);
        return (await fetch(`${url}/_/health`).catch(() => null))?.ok;
      }, 30_000, `${name} to be ready`);
    } catch (err) {
      await fp.stop('SIGKILL');
      throw err;
    }
  }
  return fp;
}
