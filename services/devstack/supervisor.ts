/**
 * Runs the local stack's processes as Kubernetes would run pods: one Node
 * process per function replica (and per long-running service), restarted with
 * back-off when it crashes, stopped with SIGTERM and a bounded grace period.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Logger } from '../../shared/platform/log.js';
import { spawnNodeChild } from './tethered.js';

export type ProcessState = 'starting' | 'ready' | 'crashed' | 'stopped';

export interface ProcessSpec {
  /** Function or service name. */
  name: string;
  replica: number;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Functions listen on a port and are ready when `/_/health` answers. */
  port?: number;
  /** Stopped once every other process has exited (the audit writer: its clients' last entries come first). */
  stopLast?: boolean;
}

export interface ManagedProcess {
  spec: ProcessSpec;
  state: ProcessState;
  restarts: number;
  child: ChildProcess | null;
  url: string | null;
}

/**
 * A port nothing listens on, for a process that will listen on it a moment later. Chosen at random
 * below the kernel's ephemeral range: a port from listen(0) comes from that range, and between our
 * check and the child's listen an outgoing connection (to Redis, a fetch) could take it as its local
 * port — the child then crash-loops on EADDRINUSE with the same port in its environment.
 */
export async function freePort(): Promise<number> {
  const [ephemeralLow] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const low = 10_000;
  const high = (ephemeralLow ?? 0) - 1;
  if (high - low >= 1_000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = low + Math.floor(Math.random() * (high - low + 1));
      // Never the same port twice from one process: the check does not reserve it, and a stack asks
      // for a dozen before any child listens (two functions on one port crash-loop on EADDRINUSE).
      if (!handedOut.has(port) && (await listenable(port))) return handOut(port);
    }
  }
  return handOut(await listenOn(0));
}

const handedOut = new Set<number>();
function handOut(port: number): number {
  handedOut.add(port);
  return port;
}

async function listenable(port: number): Promise<boolean> {
  return listenOn(port).then(
    () => true,
    () => false,
  );
}

function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/_/health`, { signal: AbortSignal.timeout(1_000) });
    return res.ok;
  } catch {
    return false;
  }
}

export class Supervisor {
  readonly processes: ManagedProcess[] = [];
  private stopping = false;

  constructor(
    private readonly log: Logger,
    private readonly graceMs: number,
  ) {}

  add(spec: ProcessSpec): ManagedProcess {
    const p: ManagedProcess = { spec, state: 'starting', restarts: 0, child: null, url: spec.port ? `http://127.0.0.1:${spec.port}` : null };
    this.processes.push(p);
    return p;
  }

  /** Start every process and wait until each function answers its health check (or the deadline). */
  async startAll(deadlineMs = 30_000): Promise<void> {
    for (const p of this.processes) if (!this.stopping) this.launch(p);
    const until = Date.now() + deadlineMs;
    await Promise.all(this.processes.map((p) => this.waitReady(p, until)));
  }

  private launch(p: ManagedProcess): void {
    p.state = 'starting';
    // Its own process group and an IPC lifeline (./tethered.ts): stopped by us, or by itself when we are gone.
    const child = spawnNodeChild(p.spec.args, p.spec.env);
    p.child = child;
    child.once('exit', (code, signal) => {
      p.child = null;
      if (this.stopping) {
        p.state = 'stopped';
        return;
      }
      p.state = 'crashed';
      p.restarts += 1;
      const delay = Math.min(250 * 2 ** Math.min(p.restarts - 1, 5), 10_000);
      this.log.error({ process: p.spec.name, replica: p.spec.replica, code, signal, restarts: p.restarts, restartInMs: delay }, 'process exited; restarting');
      setTimeout(() => {
        if (this.stopping) return;
        this.launch(p);
        void this.waitReady(p, Date.now() + 30_000);
      }, delay).unref();
    });
    if (!p.url) p.state = 'ready'; // services without a port are ready once running
  }

  private async waitReady(p: ManagedProcess, until: number): Promise<void> {
    if (!p.url) return;
    const child = p.child;
    while (Date.now() < until && p.child === child && child !== null && !this.stopping) {
      if (await healthy(p.url)) {
        p.state = 'ready';
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  ready(name: string): ManagedProcess[] {
    return this.processes.filter((p) => p.spec.name === name && p.state === 'ready');
  }

  /** SIGTERM to every child, those marked stopLast after the others; SIGKILL to any still running after the grace period. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    await this.stopEach(this.processes.filter((p) => !p.spec.stopLast));
    await this.stopEach(this.processes.filter((p) => p.spec.stopLast));
  }

  private async stopEach(processes: ManagedProcess[]): Promise<void> {
    const running = processes.filter((p) => p.child);
    await Promise.all(
      running.map(
        (p) =>
          new Promise<void>((resolve) => {
            const child = p.child!;
            const kill = setTimeout(() => {
              this.log.warn({ process: p.spec.name, replica: p.spec.replica }, 'did not stop in time; killing');
              child.kill('SIGKILL');
            }, this.graceMs);
            child.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
  }
}
