/**
 * Windows of the chunked format (./chunked.ts) decrypted or sealed off the main thread, in shared memory.
 *
 * Decryption, why: under random 4 MiB ranges (bench row 3b) the stream function spent ~1.3–1.6 ns of
 * CPU per byte sent where AES-256-GCM alone costs ~0.3: every chunk's decipher.update() allocates a
 * fresh zero-filled 64 KiB buffer outside the heap, and the sockets hold them long enough for V8 to
 * promote them and count them as external memory, so the function ran major GCs of its whole heap
 * back to back (GC threads ~16 % of the machine, memset and malloc ~10 % of the main
 * thread). In a worker that loads only node:crypto the same garbage is collected from a heap of a
 * few MB, and the main thread is left with one socket write per window from a reused buffer.
 *
 * Sealing, why: finalize hashes and encrypts the upload in one pass; in series on one thread that is
 * SHA-256 plus AES-GCM per byte (bench row 2 at 1.5× `openssl dgst` + `openssl enc` run one after
 * the other). A worker seals window k while the caller hashes it, writes window k-1 and reads window k+1.
 *
 * Workers start on first use (an idle one never keeps a process alive), up to one per core but one:
 * the main thread's socket writes (and, beside it, the edge's nginx) keep a core busy too. On 2 cores
 * one worker sent as much as two (bench 3b 792/1,026 vs 725/1,143 MB/s) in ~50 MiB less peak RSS.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** The file's cipher, as a worker rebuilds it: key, header, video id. */
interface CipherOf {
  key: Uint8Array;
  header: { raw: Uint8Array; chunkBytes: number; size: number; prefix: Uint8Array };
  videoId: string;
}

/** Decrypt chunks first..last: `length` bytes of the file `fd` at `from`, their plaintext into `out` from its start. */
export interface OpenJob extends CipherOf {
  kind: 'open';
  fd: number;
  from: number;
  length: number;
  first: number;
  last: number;
  out: SharedArrayBuffer;
}

/** Seal chunks first..last, whose plaintext is `plain` from its start: chunks and tags into `out` from its start, as they go in the file. */
export interface SealJob extends CipherOf {
  kind: 'seal';
  first: number;
  last: number;
  plain: SharedArrayBuffer;
  out: SharedArrayBuffer;
}

export type WindowJob = (OpenJob | SealJob) & { id: number };
type Job = Omit<OpenJob, 'id'> | Omit<SealJob, 'id'>;

/** `failed`: 'tag' (chunk `chunk` did not authenticate), 'short' (the file ended early), 'error' (anything else: its message and errno code). */
export interface WindowOutcome {
  id: number;
  failed?: 'tag' | 'short' | 'error';
  chunk?: number;
  message?: string;
  code?: string;
}

/** A worker's 'error' outcome as the error it was, errno code kept (ENOSPC is a 507, not a bug). */
export function workerError(what: string, outcome: WindowOutcome): Error {
  return Object.assign(new Error(`${what} failed: ${outcome.message}`), outcome.code ? { code: outcome.code } : {});
}

/** Compiled, the worker is beside this module; run from TypeScript (vitest) it is the build's (npm test builds first). */
const WORKER_SCRIPT = new URL(import.meta.url.endsWith('.ts') ? '../../dist/shared/crypto/cipher-worker.js' : './cipher-worker.js', import.meta.url);

interface Pending {
  resolve(outcome: WindowOutcome): void;
  reject(err: Error): void;
}

class CipherWorker {
  readonly pending = new Map<number, Pending>();
  private readonly worker = new Worker(WORKER_SCRIPT);

  constructor(onGone: (w: CipherWorker) => void) {
    this.worker.on('message', (outcome: WindowOutcome) => {
      const p = this.pending.get(outcome.id);
      this.pending.delete(outcome.id);
      p?.resolve(outcome);
      if (this.pending.size === 0) this.worker.unref();
    });
    const fail = (err: Error) => {
      onGone(this);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`cipher worker exited with ${code}`)));
    // Held while it has a job (a caller awaiting it keeps the process alive), let go when idle;
    // after the listeners: a 'message' listener added later refs the worker's port again (Node 20).
    this.worker.unref();
  }

  run(job: Job, id: number): Promise<WindowOutcome> {
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...job, id });
    });
  }
}

const workers: CipherWorker[] = [];
const MAX_WORKERS = Math.max(1, availableParallelism() - 1);
let nextId = 0;

/** Run one window's job on the least busy worker (a new one while there are fewer than the cores). */
function runWindow(job: Job): Promise<WindowOutcome> {
  let worker = workers.reduce<CipherWorker | undefined>((best, w) => (!best || w.pending.size < best.pending.size ? w : best), undefined);
  if (!worker || (worker.pending.size > 0 && workers.length < MAX_WORKERS)) {
    worker = new CipherWorker((gone) => {
      const at = workers.indexOf(gone);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
  }
  return worker.run(job, nextId++);
}

export const decryptWindow = (job: Omit<OpenJob, 'id' | 'kind'>) => runWindow({ ...job, kind: 'open' });
export const sealWindow = (job: Omit<SealJob, 'id' | 'kind'>) => runWindow({ ...job, kind: 'seal' });
