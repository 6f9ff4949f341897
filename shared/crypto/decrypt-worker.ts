/**
 * A decryption worker of ./decrypt-pool.ts: reads a window of chunks from the file descriptor it
 * is given (the file is open in the process), checks and decrypts each chunk and copies its
 * plaintext into the shared buffer it is given. Nothing but the outcome goes back: the bytes are
 * already in shared memory.
 */
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { ChunkCipher, TAG_BYTES } from './chunk-cipher.js';
import type { WindowJob, WindowOutcome } from './decrypt-pool.js';

/** This worker's read buffer, kept for the next window. */
let sealed = Buffer.allocUnsafe(0);

const bytes = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

function decrypt(job: WindowJob): WindowOutcome {
  const { header } = job;
  const cipher = new ChunkCipher(bytes(job.key), { ...header, raw: bytes(header.raw), prefix: bytes(header.prefix) }, job.videoId);
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
    plain.copy(out, (i - job.first) * header.chunkBytes);
  }
  return { id: job.id };
}

parentPort!.on('message', (job: WindowJob) => {
  let outcome: WindowOutcome;
  try {
    outcome = decrypt(job);
  } catch (err) {
    outcome = { id: job.id, failed: 'error', message: (err as Error).message };
  }
  parentPort!.postMessage(outcome);
});
