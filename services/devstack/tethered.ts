/**
 * Starting a child of the local stack. Every child gets its own process group,
 * so a Ctrl-C in the terminal (SIGINT to the whole foreground group) reaches
 * only npm and the devstack, which stops the children in order (functions
 * drain before Redis goes); and an IPC channel, so a child stops itself when
 * the devstack dies without stopping it. Programs that are not Node go through
 * ./tether.ts for that channel.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from './local-defaults.js';

export const TETHER = path.join(REPO_ROOT, 'dist/services/devstack/tether.js');

/** A Node script as a child of the devstack. */
export function spawnNodeChild(args: string[], env: NodeJS.ProcessEnv, output: 'inherit' | 'ignore' = 'inherit'): ChildProcess {
  const stdio: StdioOptions = ['ignore', output, output, 'ipc'];
  return spawn(process.execPath, args, { env, stdio, detached: true });
}

/** Any program as a child of the devstack, stopped with `stopSignal`. */
export function spawnTethered(program: string, args: string[], stopSignal: NodeJS.Signals, env: NodeJS.ProcessEnv = process.env, output: 'inherit' | 'ignore' = 'inherit'): ChildProcess {
  return spawnNodeChild([TETHER, stopSignal, program, ...args], env, output);
}
