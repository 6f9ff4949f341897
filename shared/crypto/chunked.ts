/**
 * The encrypted original's format: AES-256-GCM in fixed-size chunks, so any byte range decrypts
 * by reading only the chunks it touches.
 *
 *   header (32 bytes): magic "PVAEAD01" ‖ chunk size u32 ‖ reserved u32 (0) ‖ plaintext size u64 ‖ nonce prefix (8 random)
 *   chunk i:           ciphertext (chunk size; the last one shorter) ‖ tag (16)
 *
 * The nonce of chunk i is prefix ‖ u32(i); the key is the video's (derived for 'original'). Every
 * chunk's AAD is header ‖ videoId (16 bytes) ‖ u32(i) ‖ final flag, so a chunk moved, a chunk
 * cut off the end, a header edited or a file copied onto another video fails its tag. A failed tag
 * is an error, never bytes (IntegrityError).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { deriveKey } from '../keys/video-keys.js';
import { AppError } from '../platform/errors.js';
import { fileChecksum } from '../video/checksum.js';
import { ChunkCipher, chunkCount, HEADER_BYTES, TAG_BYTES, type Header } from './chunk-cipher.js';
import { decryptWindow, sealWindow, workerError, type WindowOutcome } from './cipher-pool.js';

export { chunkCount, HEADER_BYTES, type Header } from './chunk-cipher.js';
export const MAGIC = Buffer.from('PVAEAD01');
export const CHUNK_BYTES = 64 * 1024;
/** Chunks read, decrypted and handed on at once (4 MiB of plaintext): one read() per window. */
const WINDOW_CHUNKS = 64;
/**
 * Plaintext buffers of whole windows (shared memory: the decryption workers write into them), kept
 * for the next range once the socket is done with them: a fresh 4 MiB buffer per window is page
 * faults on every range (figures in docs/benchmarks.md). At most SPARE_WINDOWS are kept (32 MiB);
 * a window of a file with larger chunks gets a buffer of its own.
 */
const spareWindows: Buffer[] = [];
const SPARE_WINDOWS = 8;
const WINDOW_BYTES = CHUNK_BYTES * WINDOW_CHUNKS;
/** encryptFile flushes what it wrote every this many windows (32 MiB): 256 MiB in ~480 ms instead of ~620 with one fsync at the end (docs/benchmarks.md). */
const FLUSH_WINDOWS = 8;

const sharedBuffer = (bytes: number) => Buffer.from(new SharedArrayBuffer(bytes));

/** A window's plaintext (the part of it in the range); release() once nothing reads it any more (the socket's write callback). */
export interface PlainWindow {
  bytes: Buffer;
  release(): void;
}

/** A chunk failed its tag, or the header does not fit the file: the ciphertext was altered. */
export class IntegrityError extends AppError {
  constructor(readonly chunk: number | null) {
    super(500, 'media_integrity', chunk === null ? 'the encrypted file is malformed' : `chunk ${chunk} of the encrypted file failed its authentication tag`);
  }
}

/** The ciphertext file's length for `size` plaintext bytes. */
export const encryptedSize = (size: number, chunkBytes = CHUNK_BYTES) => HEADER_BYTES + size + TAG_BYTES * chunkCount(size, chunkBytes);

function makeHeader(size: number, chunkBytes: number): Header {
  const raw = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(raw, 0);
  raw.writeUInt32BE(chunkBytes, 8);
  raw.writeBigUInt64BE(BigInt(size), 16);
  const prefix = randomBytes(8);
  prefix.copy(raw, 24);
  return { raw, chunkBytes, size, prefix };
}

export function parseHeader(raw: Buffer, fileSize: number): Header {
  if (raw.length < HEADER_BYTES || !raw.subarray(0, 8).equals(MAGIC)) throw new IntegrityError(null);
  const chunkBytes = raw.readUInt32BE(8);
  const size = Number(raw.readBigUInt64BE(16));
  if (chunkBytes < 1024 || chunkBytes > 16 * 1024 * 1024 || raw.readUInt32BE(12) !== 0 || encryptedSize(size, chunkBytes) !== fileSize) throw new IntegrityError(null);
  return { raw: Buffer.from(raw.subarray(0, HEADER_BYTES)), chunkBytes, size, prefix: Buffer.from(raw.subarray(24, 32)) };
}

/**
 * Encrypt `source` into `target` (created; the caller renames it into place), hashing the plaintext
 * as it goes: one pass over the source. Each turn a worker (./cipher-pool.ts) seals window k while
 * this thread hashes it, the previous window is written and the next one is read, each into its
 * own pair of shared buffers. Returns the plaintext's `sha256:<hex>` and size.
 */
export async function encryptFile(source: string, target: string, key: Buffer, videoId: string): Promise<{ checksum: string; size: number }> {
  const input = await open(source, 'r');
  try {
    const size = (await input.stat()).size;
    const header = makeHeader(size, CHUNK_BYTES);
    const cipher = new ChunkCipher(key, header, videoId);
    const hash = createHash('sha256');
    const output = await open(target, 'w', 0o640);
    const plains = [takeWindow(), takeWindow()];
    const sealedBytes = Math.min(WINDOW_BYTES, size) + Math.min(WINDOW_CHUNKS, cipher.count) * TAG_BYTES; // a small file (an image): small buffers
    const sealed = [sharedBuffer(sealedBytes), sharedBuffer(sealedBytes)];
    const read = async (first: number, into: Buffer): Promise<SourceWindow> => {
      const last = Math.min(cipher.count, first + WINDOW_CHUNKS) - 1;
      const want = (last - first) * CHUNK_BYTES + cipher.plainLength(last);
      const got = await readFully(input, into, want, first * CHUNK_BYTES);
      if (got !== want) throw new AppError(409, 'source_changed', 'the upload changed while it was being encrypted');
      return { first, last, plain: into };
    };
    const write = async (from: Buffer, length: number, position: number) => {
      for (let done = 0; done < length; ) done += (await output.write(from, done, length - done, position + done)).bytesWritten;
    };
    const settled = <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => {}); // awaited later (next turn, or below): never an unhandled rejection
      return p;
    };
    let reading: Promise<SourceWindow> | null = settled(read(0, plains[0]!));
    let sealing: Promise<WindowOutcome> | null = null;
    /** Writes of sealed[0] and sealed[1] in flight; and, behind them, flushes of what is written. */
    const writing: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
    // Written windows flushed to disk while later ones are sealed, so the final fsync has little left.
    let flushing: Promise<void> = Promise.resolve();
    try {
      await output.write(header.raw, 0, HEADER_BYTES, 0);
      for (let turn = 0; reading; turn++) {
        const { first, last, plain }: SourceWindow = await reading;
        const out = sealed[turn % 2]!;
        await writing[turn % 2]; // its buffer written out two turns ago
        sealing = sealWindow({ ...workerCipher(cipher), first, last, plain: plain.buffer as SharedArrayBuffer, out: out.buffer as SharedArrayBuffer });
        reading = first + WINDOW_CHUNKS < cipher.count ? settled(read(first + WINDOW_CHUNKS, plains[(turn + 1) % 2]!)) : null;
        const plainBytes = (last - first) * CHUNK_BYTES + cipher.plainLength(last);
        hash.update(plain.subarray(0, plainBytes));
        const outcome = await sealing;
        sealing = null;
        if (outcome.failed) throw workerError('encryption', outcome);
        writing[turn % 2] = settled(write(out, plainBytes + (last - first + 1) * TAG_BYTES, cipher.offset(first)));
        if ((turn + 1) % FLUSH_WINDOWS === 0) {
          const written = writing[turn % 2]!;
          flushing = settled(flushing.then(() => written).then(() => output.datasync()));
        }
      }
      await Promise.all(writing);
      await flushing;
      await output.sync();
    } finally {
      // The worker fills a buffer, the thread pool reads and writes others: all done before any is let go.
      await Promise.all([sealing, reading, ...writing, flushing].map((p) => p?.catch(() => null)));
      await output.close();
      for (const b of plains) if (spareWindows.length < SPARE_WINDOWS) spareWindows.push(b);
    }
    return { checksum: `sha256:${hash.digest('hex')}`, size };
  } finally {
    await input.close();
  }
}

const takeWindow = () => spareWindows.pop() ?? sharedBuffer(WINDOW_BYTES);

/** Chunks first..last of the source, read into `plain` from its start. */
interface SourceWindow {
  first: number;
  last: number;
  plain: Buffer;
}

/** What a worker needs to rebuild a file's cipher. */
const workerCipher = ({ key, header, videoId }: ChunkCipher) => ({
  key,
  header: { raw: header.raw, chunkBytes: header.chunkBytes, size: header.size, prefix: header.prefix },
  videoId,
});

async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<number> {
  let read = 0;
  while (read < length) {
    const { bytesRead } = await handle.read(buffer, read, length - read, position + read);
    if (bytesRead === 0) break;
    read += bytesRead;
  }
  return read;
}

/**
 * An open file's header when the file is in this format, else null (originals stored before
 * encryption are not): one read, the file's size from the caller's fstat.
 */
export async function readEncryptedHeader(handle: FileHandle, fileSize: number): Promise<Header | null> {
  const raw = Buffer.alloc(HEADER_BYTES);
  const read = await readFully(handle, raw, HEADER_BYTES, 0);
  if (read < MAGIC.length || !raw.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  return parseHeader(raw.subarray(0, read), fileSize);
}

/** Whether an open file is in this format (its first bytes are the magic): originals stored before encryption are not. */
export async function isEncrypted(handle: FileHandle): Promise<boolean> {
  const probe = Buffer.alloc(MAGIC.length);
  const { bytesRead } = await handle.read(probe, 0, MAGIC.length, 0);
  return bytesRead === MAGIC.length && probe.equals(MAGIC);
}

/** Whether the file at `file` is in this format; false when it cannot be opened. */
export async function isEncryptedFile(file: string): Promise<boolean> {
  const handle = await open(file, 'r').catch(() => null);
  if (!handle) return false;
  return isEncrypted(handle).finally(() => handle.close());
}

/** An encrypted original opened for reading: ranges of its plaintext, each chunk checked before a byte leaves. */
export class EncryptedFile {
  private constructor(
    private readonly handle: FileHandle,
    private readonly cipher: ChunkCipher,
  ) {}

  static async open(handle: FileHandle, key: Buffer, videoId: string): Promise<EncryptedFile> {
    const header = await readEncryptedHeader(handle, (await handle.stat()).size);
    if (!header) throw new IntegrityError(null);
    return EncryptedFile.withHeader(handle, header, key, videoId);
  }

  /** A file whose header was read already (readEncryptedHeader). */
  static withHeader(handle: FileHandle, header: Header, key: Buffer, videoId: string): EncryptedFile {
    return new EncryptedFile(handle, new ChunkCipher(key, header, videoId));
  }

  /** Plaintext size. */
  get size(): number {
    return this.cipher.header.size;
  }

  /** The file's key, for the media edge's grant only (shared/delivery/edge-decrypt.ts). */
  get key(): Buffer {
    return this.cipher.key;
  }

  /**
   * Plaintext bytes start..end (inclusive), a window (at most 4 MiB) at a time, decrypted by the
   * workers (./cipher-pool.ts) one window ahead of the caller. Reads only the chunks the range lies
   * in; every chunk's tag is checked before its window is handed on. The caller releases each window.
   */
  async *range(start: number, end: number): AsyncGenerator<PlainWindow> {
    if (end < start) return;
    const cs = this.cipher.header.chunkBytes;
    const lastChunk = Math.floor(end / cs);
    const decrypt = (first: number) => {
      const window = this.decryptWindow(first, Math.min(lastChunk, first + WINDOW_CHUNKS - 1), start, end);
      window.catch(() => {}); // awaited below, possibly after the caller's wait for a drain: never an unhandled rejection
      return window;
    };
    let first = Math.floor(start / cs);
    let next: Promise<PlainWindow> | null = decrypt(first);
    try {
      while (next) {
        const window = await next;
        first += WINDOW_CHUNKS;
        next = first <= lastChunk ? decrypt(first) : null;
        yield window;
      }
    } finally {
      // A caller that stops early: the window in flight is waited for (its worker reads this file) and freed.
      if (next) (await next.catch(() => null))?.release();
    }
  }

  /** Chunks first..last decrypted by a worker into a window buffer: the part of it in start..end. */
  private async decryptWindow(first: number, last: number, start: number, end: number): Promise<PlainWindow> {
    const { cipher } = this;
    const cs = cipher.header.chunkBytes;
    const from = cipher.offset(first);
    const plainBytes = (last - first) * cs + cipher.plainLength(last);
    const buffer = plainBytes <= WINDOW_BYTES ? takeWindow() : sharedBuffer(plainBytes);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (buffer.length === WINDOW_BYTES && spareWindows.length < SPARE_WINDOWS) spareWindows.push(buffer);
    };
    const outcome = await decryptWindow({
      ...workerCipher(cipher),
      fd: this.handle.fd,
      from,
      length: cipher.offset(last) + cipher.plainLength(last) + TAG_BYTES - from,
      first,
      last,
      out: buffer.buffer as SharedArrayBuffer,
    }).catch((err: unknown) => {
      release();
      throw err;
    });
    if (outcome.failed) {
      release();
      throw outcome.failed === 'error' ? workerError('decryption', outcome) : new IntegrityError(outcome.failed === 'tag' ? outcome.chunk! : null);
    }
    const base = first * cs;
    return { bytes: buffer.subarray(Math.max(0, start - base), Math.min(plainBytes, end - base + 1)), release };
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/**
 * The scrub's check: decrypt every chunk (each tag verified) and hash the plaintext.
 * `onBytes` after each window (the scrub paces itself there).
 */
export async function verifyEncryptedFile(file: string, key: Buffer, videoId: string, onBytes: (n: number) => void | Promise<void> = () => {}): Promise<{ checksum: string; size: number }> {
  const handle = await open(file, 'r');
  // A header that does not fit the file is refused before there is an EncryptedFile to close.
  const enc = await EncryptedFile.open(handle, key, videoId).catch(async (err: unknown) => {
    await handle.close();
    throw err;
  });
  try {
    const hash = createHash('sha256');
    // An empty original still has its one (empty) chunk, whose tag is checked too.
    for await (const window of enc.range(0, Math.max(0, enc.size - 1))) {
      hash.update(window.bytes);
      window.release();
      await onBytes(window.bytes.length);
    }
    return { checksum: `sha256:${hash.digest('hex')}`, size: enc.size };
  } finally {
    await enc.close();
  }
}

/**
 * The plaintext checksum of an original, encrypted or not (finalize after a crash, the scrub):
 * an encrypted one is decrypted chunk by chunk, every tag checked. `dataKey` null with an
 * encrypted file is an error the caller reports (the key is missing or shredded).
 */
export async function plaintextChecksum(
  file: string,
  videoId: string,
  dataKey: () => Promise<Buffer | null>,
  onBytes: (n: number) => void | Promise<void> = () => {},
): Promise<{ checksum: string; size: number; encrypted: boolean }> {
  const handle = await open(file, 'r');
  const encrypted = await isEncrypted(handle).finally(() => handle.close());
  if (!encrypted) return { ...(await fileChecksum(file, { chunkBytes: CHUNK_BYTES * WINDOW_CHUNKS, onChunk: onBytes })), encrypted };
  const key = await dataKey();
  if (!key) throw new MissingKeyError();
  return { ...(await verifyEncryptedFile(file, deriveKey(key, 'original'), videoId, onBytes)), encrypted };
}

/** An encrypted file whose video has no data key (shredded, or KEY_DIR is not the one it was made with). */
export class MissingKeyError extends AppError {
  constructor() {
    super(500, 'key_missing', 'the video is encrypted and its data key is missing');
  }
}
