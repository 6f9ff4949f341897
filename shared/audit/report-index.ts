/**
 * The report index of one audit log file (`AUDIT_DIR/index/<category>-YYYY-MM-DD.idx`):
 * where each line starts, the first 64 bits of each line's verified hash, and which
 * lines name each video and each subject pseudonym. Built by the reader after the
 * file's chain verified (shared/audit/report.ts, `pulsevault audit reindex`), never by
 * the writer, and signed with AUDIT_SIGNING_KEY like a checkpoint: an index cannot
 * hide a line without the key. It is never trusted alone — every line it points at
 * is re-read, re-hashed and compared with the hash the chain had when it verified.
 *
 * Layout (little-endian): u32 header length, header JSON, the line table (one f64
 * byte offset per line, then 8 hash bytes per line), u32 key table length, key table
 * JSON ([key, count] sorted by key), the postings (u32 line indexes, key by key), and
 * last an HMAC-SHA256 of everything before it. 24 bytes per line when every line
 * names a video and a subject: ~5 MB for a 200,000-entry day (~100 MB of log).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../platform/atomic-file.js';

export const INDEX_DIR = 'index';
const MAC_BYTES = 32;
const HASH_PREFIX_BYTES = 8;

const headerSchema = z
  .object({
    v: z.literal(1),
    file: z.string(),
    /** Bytes of the log file the index covers (complete lines only). */
    size: z.number().int().nonnegative(),
    lines: z.number().int().nonnegative(),
    /** Where the covered lines join the chain and where they end. */
    firstSeq: z.number().int().positive(),
    chainIn: z.string().regex(/^[0-9a-f]{64}$/),
    lastSeq: z.number().int().positive(),
    lastHash: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type IndexHeader = z.infer<typeof headerSchema>;

/** Index keys: a video, or a subject pseudonym. */
export const videoKey = (videoId: string) => `v:${videoId}`;
export const subjectKey = (pseudonym: string) => `s:${pseudonym}`;

export function indexPath(auditDir: string, logFile: string): string {
  return path.join(auditDir, INDEX_DIR, logFile.replace(/\.log$/, '.idx'));
}

function mac(key: string, body: Buffer): Buffer {
  return createHmac('sha256', key).update('pulsevault-audit-index:').update(body).digest();
}

/** Collects a file's lines while it is scanned, then writes the signed index. */
export class IndexBuilder {
  private offsets: number[] = [];
  private hashes: string[] = [];
  private readonly postings = new Map<string, number[]>();

  /** Add the next line: its byte offset, its (verified) hash, the keys it names. */
  add(offset: number, hash: string, keys: readonly (string | null)[]): void {
    const line = this.offsets.length;
    this.offsets.push(offset);
    this.hashes.push(hash);
    for (const key of keys) {
      if (key === null) continue;
      let list = this.postings.get(key);
      if (!list) this.postings.set(key, (list = []));
      list.push(line);
    }
  }

  get lines(): number {
    return this.offsets.length;
  }

  encode(header: Omit<IndexHeader, 'v' | 'lines'>, signingKey: string): Buffer {
    const n = this.offsets.length;
    const head = Buffer.from(JSON.stringify({ v: 1, ...header, lines: n } satisfies IndexHeader));
    const table = Buffer.alloc(n * (8 + HASH_PREFIX_BYTES));
    for (let i = 0; i < n; i++) {
      table.writeDoubleLE(this.offsets[i]!, i * 8);
      table.write(this.hashes[i]!.slice(0, HASH_PREFIX_BYTES * 2), n * 8 + i * HASH_PREFIX_BYTES, 'hex');
    }
    const keys = [...this.postings.keys()].sort();
    const keyTable = Buffer.from(JSON.stringify(keys.map((k) => [k, this.postings.get(k)!.length])));
    const postings = Buffer.alloc(keys.reduce((sum, k) => sum + this.postings.get(k)!.length * 4, 0));
    let at = 0;
    for (const k of keys) for (const line of this.postings.get(k)!) at = postings.writeUInt32LE(line, at);
    const u32 = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v);
      return b;
    };
    const body = Buffer.concat([u32(head.length), head, table, u32(keyTable.length), keyTable, postings]);
    return Buffer.concat([body, mac(signingKey, body)]);
  }

  async write(auditDir: string, header: Omit<IndexHeader, 'v' | 'lines'>, signingKey: string): Promise<void> {
    await mkdir(path.join(auditDir, INDEX_DIR), { recursive: true });
    await writeFileAtomic(indexPath(auditDir, header.file), this.encode(header, signingKey));
  }
}

/** A signed index as read back. */
export class ReportIndex {
  private constructor(
    readonly header: IndexHeader,
    private readonly buf: Buffer,
    private readonly tableAt: number,
    private readonly keys: Map<string, { at: number; count: number }>,
  ) {}

  /** The index of `logFile`, or null when it is absent, unsigned, or not this file's. */
  static async read(auditDir: string, logFile: string, signingKey: string): Promise<ReportIndex | null> {
    let buf: Buffer;
    try {
      buf = await readFile(indexPath(auditDir, logFile));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    return ReportIndex.decode(buf, logFile, signingKey);
  }

  static decode(buf: Buffer, logFile: string, signingKey: string): ReportIndex | null {
    if (buf.length < 4 + MAC_BYTES) return null;
    const body = buf.subarray(0, buf.length - MAC_BYTES);
    if (!timingSafeEqual(mac(signingKey, body), buf.subarray(body.length))) return null;
    try {
      const headLength = body.readUInt32LE(0);
      const header = headerSchema.parse(JSON.parse(body.toString('utf8', 4, 4 + headLength)));
      if (header.file !== logFile) return null;
      const tableAt = 4 + headLength;
      const keyTableAt = tableAt + header.lines * (8 + HASH_PREFIX_BYTES);
      const keyTableLength = body.readUInt32LE(keyTableAt);
      const keyList = JSON.parse(body.toString('utf8', keyTableAt + 4, keyTableAt + 4 + keyTableLength)) as [string, number][];
      const keys = new Map<string, { at: number; count: number }>();
      let at = keyTableAt + 4 + keyTableLength;
      for (const [key, count] of keyList) {
        keys.set(key, { at, count });
        at += count * 4;
      }
      return new ReportIndex(header, body, tableAt, keys);
    } catch {
      return null; // signed by us, so only a format change gets here: rebuild
    }
  }

  /** 0-based indexes of the lines naming `key`, ascending. */
  linesOf(key: string): number[] {
    const k = this.keys.get(key);
    if (!k) return [];
    const lines = new Array<number>(k.count);
    for (let i = 0; i < k.count; i++) lines[i] = this.buf.readUInt32LE(k.at + i * 4);
    return lines;
  }

  offsetOf(line: number): number {
    return line === this.header.lines ? this.header.size : this.buf.readDoubleLE(this.tableAt + line * 8);
  }

  /** Whether `hash` starts with the hash the line had when its chain verified. */
  hashMatches(line: number, hash: string): boolean {
    const at = this.tableAt + this.header.lines * 8 + line * HASH_PREFIX_BYTES;
    return this.buf.toString('hex', at, at + HASH_PREFIX_BYTES) === hash.slice(0, HASH_PREFIX_BYTES * 2);
  }
}
