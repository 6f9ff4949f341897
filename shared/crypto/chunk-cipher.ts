/**
 * One chunk of the chunked format (./chunked.ts, where the format is described): its nonce, AAD,
 * sealing and opening. Apart from chunked.ts so that the cipher workers (./cipher-worker.ts)
 * load node:crypto and nothing else: a small heap is what keeps their garbage collections cheap.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';

export const HEADER_BYTES = 32;
export const TAG_BYTES = 16;

export interface Header {
  raw: Buffer;
  chunkBytes: number;
  size: number;
  prefix: Buffer;
}

export const chunkCount = (size: number, chunkBytes: number) => Math.max(1, Math.ceil(size / chunkBytes));

function uuidBytes(videoId: string): Buffer {
  const b = Buffer.from(videoId.replaceAll('-', ''), 'hex');
  if (b.length !== 16) throw new Error('not a video id');
  return b;
}

export class ChunkCipher {
  private readonly id: Buffer;
  readonly count: number;

  constructor(
    /** Also handed to the cipher workers (./cipher-pool.ts), which build their own cipher. */
    readonly key: Buffer,
    readonly header: Header,
    readonly videoId: string,
  ) {
    this.id = uuidBytes(videoId);
    this.count = chunkCount(header.size, header.chunkBytes);
  }

  private nonceAndAad(i: number): { nonce: Buffer; aad: Buffer } {
    const nonce = Buffer.alloc(12);
    this.header.prefix.copy(nonce, 0);
    nonce.writeUInt32BE(i, 8);
    const aad = Buffer.alloc(HEADER_BYTES + 16 + 5);
    this.header.raw.copy(aad, 0);
    this.id.copy(aad, HEADER_BYTES);
    aad.writeUInt32BE(i, HEADER_BYTES + 16);
    aad[HEADER_BYTES + 20] = i === this.count - 1 ? 1 : 0;
    return { nonce, aad };
  }

  /** Plaintext length of chunk i. */
  plainLength(i: number): number {
    return i < this.count - 1 ? this.header.chunkBytes : this.header.size - (this.count - 1) * this.header.chunkBytes;
  }

  /** Offset of chunk i in the file. */
  offset(i: number): number {
    return HEADER_BYTES + i * (this.header.chunkBytes + TAG_BYTES);
  }

  seal(i: number, plain: Buffer): Buffer[] {
    const { nonce, aad } = this.nonceAndAad(i);
    const c = createCipheriv('aes-256-gcm', this.key, nonce).setAAD(aad);
    const body = c.update(plain);
    c.final();
    return [body, c.getAuthTag()];
  }

  /** Chunk i's plaintext, or null when its tag fails (the caller's IntegrityError). */
  open(i: number, sealed: Buffer): Buffer | null {
    const { nonce, aad } = this.nonceAndAad(i);
    const d = createDecipheriv('aes-256-gcm', this.key, nonce).setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const plain = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    try {
      d.final();
    } catch {
      return null;
    }
    return plain;
  }
}
