/** A Node child process of ours (a function, the stack, a service) with its output captured. */
import { spawn, type ChildProcess } from 'node:child_process';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './secrets.js';

export interface NodeProcess {
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** The exit code (null when killed by a signal), once it has exited. */
  exited: Promise<number | null>;
}

/** The environment every test process starts from: test secrets, no secret files, test mode. */
export const baseTestEnv = (): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  NODE_ENV: 'test',
  LOG_LEVEL: 'info',
  HMAC_SECRET: TEST_HMAC_SECRET,
  AUDIT_SIGNING_KEY: TEST_AUDIT_KEY,
  SECRETS_DIR: '/nonexistent',
  HOST: '127.0.0.1',
});

export function spawnNode(args: string[], env: NodeJS.ProcessEnv): NodeProcess {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its exit in `cwd` with only PATH, HOME and `env` (as a user's shell would, no test secrets). */
export function runToExit(command: string, args: string[], env: Record<string, string>, cwd: string): Promise<Finished> {
  const child = spawn(command, args, { cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}
