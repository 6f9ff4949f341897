/**
 * The record() calls of a process waiting for their acknowledgement, by key,
 * each with a deadline. One timer per process sweeps the deadlines, not one
 * per call (a deadline is kept to within SWEEP_MS): under load thousands of
 * calls wait at once.
 */
import { performance } from 'node:perf_hooks';

const SWEEP_MS = 50;

interface Waiting {
  deadline: number;
  resolve(): void;
  reject(err: Error): void;
}

export class PendingCalls<K> {
  private readonly waiting = new Map<K, Waiting>();
  private sweeper: NodeJS.Timeout | null = null;

  /** `expired` builds the error of a call past its deadline. */
  constructor(private readonly expired: () => Error) {}

  /** Resolves when settle(key, null) is called; rejects on settle(key, err), failAll() or after `timeoutMs`. */
  wait(key: K, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.set(key, { deadline: performance.now() + Math.max(0, timeoutMs), resolve, reject });
      this.sweeper ??= setTimeout(() => this.sweep(), SWEEP_MS);
    });
  }

  /** Settle the call waiting under `key`; false when none waits (already settled, timed out, or never made). */
  settle(key: K, err: Error | null): boolean {
    const call = this.waiting.get(key);
    if (!call) return false;
    this.waiting.delete(key);
    if (err) call.reject(err);
    else call.resolve();
    return true;
  }

  get size(): number {
    return this.waiting.size;
  }

  failAll(err: Error): void {
    const calls = [...this.waiting.values()];
    this.waiting.clear();
    for (const call of calls) call.reject(err);
  }

  close(err: Error): void {
    this.failAll(err);
    if (this.sweeper) clearTimeout(this.sweeper);
    this.sweeper = null;
  }

  private sweep(): void {
    this.sweeper = null;
    const now = performance.now();
    for (const [key, call] of this.waiting) {
      if (call.deadline > now) continue;
      this.waiting.delete(key);
      call.reject(this.expired());
    }
    if (this.waiting.size > 0) this.sweeper = setTimeout(() => this.sweep(), SWEEP_MS);
  }
}
