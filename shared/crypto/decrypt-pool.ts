/**
 * Windows of an encrypted file decrypted off the main thread, into shared memory.
 *
 * Why: under random 4 MiB ranges (bench row 3b) the stream function spent ~1.3–1.6 ns of CPU per
 * byte sent where AES-256-GCM alone costs ~0.3: every chunk's decipher.update() allocates a fresh
 * zero-filled 64 KiB buffer outside the heap, and the sockets hold them long enough for V8 to
 * promote them and count them as external memory, so the function ran major GCs of its whole heap
 * back to back (GC threads ~16 % of the machine, memset and malloc ~10 % of the main
 * thread). In a worker that loads only node:crypto the same garbage is collected from a heap of a
 * few MB, and the main thread is left with one socket write per window from a reused buffer.
 *
 * Workers start on first use (unref'd: they never keep a process alive), up to one per core but one:
 * the main thread's socket writes (and, beside it, the edge's nginx) keep a core busy too. On 2 cores
 * one worker sent as much as two (bench 3b 792/1,026 vs 725/1,143 MB/s) in ~50 MiB less peak RSS.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** What a worker is asked: chunks first..last, `length` bytes of the file at `from`, plaintext into `out` from its start. */
export interface WindowJob {
  id: number;
  fd: number;
  from: number;
  length: number;
  first: number;
  last: number;
  key: Uint8Array;
  header: { raw: Uint8Array; chunkBytes: number; size: number; prefix: Uint8Array };
  videoId: string;
  out: SharedArrayBuffer;
}

/** `failed`: 'tag' (chunk `chunk` did not authenticate), 'short' (the file ended early), 'error' (anything else). */
export interface WindowOutcome {
  id: number;
  failed?: 'tag' | 'short' | 'error';
  chunk?: number;
  message?: string;
}

/** Compiled, the worker is beside this module; run from TypeScript (vitest) it is the build's (npm test builds first). */
const WORKER_SCRIPT = new URL(import.meta.url.endsWith('.ts') ? '../../dist/shared/crypto/decrypt-worker.js' : './decrypt-worker.js', import.meta.url);

interface Pending {
  resolve(outcome: WindowOutcome): void;
  reject(err: Error): void;
}

class DecryptWorker {
  readonly pending = new Map<number, Pending>();
  private readonly worker = new Worker(WORKER_SCRIPT);

  constructor(onGone: (w: DecryptWorker) => void) {
    this.worker.unref();
    this.worker.on('message', (outcome: WindowOutcome) => {
      const p = this.pending.get(outcome.id);
      this.pending.delete(outcome.id);
      p?.resolve(outcome);
    });
    const fail = (err: Error) => {
      onGone(this);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`decryption worker exited with ${code}`)));
  }

  run(job: Omit<WindowJob, 'id'>, id: number): Promise<WindowOutcome> {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...job, id });
    });
  }
}

const workers: DecryptWorker[] = [];
const MAX_WORKERS = Math.max(1, availableParallelism() - 1);
let nextId = 0;

/** Decrypt one window on the least busy worker (a new one while there are fewer than the cores). */
export function decryptWindow(job: Omit<WindowJob, 'id'>): Promise<WindowOutcome> {
  let worker = workers.reduce<DecryptWorker | undefined>((best, w) => (!best || w.pending.size < best.pending.size ? w : best), undefined);
  if (!worker || (worker.pending.size > 0 && workers.length < MAX_WORKERS)) {
    worker = new DecryptWorker((gone) => {
      const at = workers.indexOf(gone);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
  }
  return worker.run(job, nextId++);
}
