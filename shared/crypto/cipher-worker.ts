/**
 * A worker of ./cipher-pool.ts. To open a window it reads the window's chunks from the file
 * descriptor it is given (the file is open in the process), checks and decrypts each chunk and
 * copies its plaintext into the shared buffer it is given; to seal one it encrypts the plaintext of
 * one shared buffer into another, chunks and tags as they go in the file. Nothing but the outcome
 * goes back: the bytes are in shared memory.
 */
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { ChunkCipher, TAG_BYTES } from './chunk-cipher.js';
import type { OpenJob, SealJob, WindowJob, WindowOutcome } from './cipher-pool.js';

/** This worker's read buffer, kept for the next window. */
let sealed = Buffer.allocUnsafe(0);

const bytes = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

const cipherOf = ({ key, header, videoId }: OpenJob | SealJob) =>
  new ChunkCipher(bytes(key), { ...header, raw: bytes(header.raw), prefix: bytes(header.prefix) }, videoId);

function open(job: OpenJob & { id: number }): WindowOutcome {
  const cipher = cipherOf(job);
  if (sealed.length < job.length) sealed = Buffer.allocUnsafe(job.length);
  let read = 0;
  while (read < job.length) {
    const n = readSync(job.fd, sealed, read, job.length - read, job.from + read);
    if (n === 0) return { id: job.id, failed: 'short' };
    read += n;
  }
  const out = Buffer.from(job.out);
  const from = cipher.offset(job.first);
  for (let i = job.first; i <= job.last; i++) {
    const at = cipher.offset(i) - from;
    const plain = cipher.open(i, sealed.subarray(at, at + cipher.plainLength(i) + TAG_BYTES));
    if (!plain) return { id: job.id, failed: 'tag', chunk: i };
    plain.copy(out, (i - job.first) * job.header.chunkBytes);
  }
  return { id: job.id };
}

function seal(job: SealJob & { id: number }): WindowOutcome {
  const cipher = cipherOf(job);
  const plain = Buffer.from(job.plain);
  const out = Buffer.from(job.out);
  let at = 0;
  for (let i = job.first; i <= job.last; i++) {
    const from = (i - job.first) * job.header.chunkBytes;
    for (const part of cipher.seal(i, plain.subarray(from, from + cipher.plainLength(i)))) at += part.copy(out, at);
  }
  return { id: job.id };
}

parentPort!.on('message', (job: WindowJob) => {
  let outcome: WindowOutcome;
  try {
    outcome = job.kind === 'open' ? open(job) : seal(job);
  } catch (err) {
    outcome = { id: job.id, failed: 'error', message: (err as Error).message, code: (err as NodeJS.ErrnoException).code };
  }
  parentPort!.postMessage(outcome);
});
