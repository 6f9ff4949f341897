/** The audit directory: which log files exist, their first and last entries, their lines. */
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { auditEntrySchema, hashEntry, parseLogFileName, type AuditCategory, type AuditEntry } from './entry.js';

export interface LogFile {
  name: string;
  category: AuditCategory;
  day: string;
}

/** Log files of the directory, per category, oldest day first. */
export async function listLogFiles(auditDir: string): Promise<Map<AuditCategory, LogFile[]>> {
  const byCategory = new Map<AuditCategory, LogFile[]>();
  let names: string[];
  try {
    names = await readdir(auditDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return byCategory;
    throw err;
  }
  for (const name of names.sort()) {
    const parsed = parseLogFileName(name);
    if (!parsed) continue;
    const list = byCategory.get(parsed.category) ?? [];
    list.push({ name, ...parsed });
    byCategory.set(parsed.category, list);
  }
  return byCategory;
}

export class AuditFileError extends Error {
  constructor(readonly file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.name = 'AuditFileError';
  }
}

/** A line as parsed: an entry whose hash is right, or why not. */
export type ParsedLine = { entry: AuditEntry } | { error: string };

/** Parse one line as an entry whose hash is right, or explain why not. */
export function parseEntryLine(line: string): ParsedLine {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { error: 'not JSON' };
  }
  const parsed = auditEntrySchema.safeParse(json);
  if (!parsed.success) return { error: `not an audit entry (${parsed.error.issues[0]?.path.join('.') ?? '?'})` };
  const { hash, ...rest } = parsed.data;
  if (hashEntry(rest) !== hash) return { error: 'hash does not match its content' };
  return { entry: parsed.data };
}

export interface FileEnds {
  /** First and last entries; null when the file holds no complete line. */
  first: AuditEntry | null;
  last: AuditEntry | null;
  /** Bytes of complete lines. */
  size: number;
  /** Bytes after the last newline: a torn write from a crash mid-append. */
  tornBytes: number;
}

const CHUNK = 64 * 1024;

/**
 * First and last entries of a log file without reading all of it (a busy day's
 * file is large). Throws AuditFileError when either end does not hold a valid
 * entry: the writer must not extend a chain it cannot trust.
 */
export async function readFileEnds(file: string): Promise<FileEnds> {
  const fd = await open(file, 'r');
  try {
    const { size: total } = await fd.stat();
    // Read backwards in chunks until the text holds the last newline and the one before it (or the file start).
    let text = '';
    let from = total;
    while (from > 0) {
      const next = Math.max(0, from - CHUNK);
      const buf = Buffer.alloc(from - next);
      await fd.read(buf, 0, buf.length, next);
      text = buf.toString('latin1') + text; // latin1 keeps one char per byte, so offsets stay byte offsets
      from = next;
      const lastNewline = text.lastIndexOf('\n');
      if (lastNewline >= 0 && text.lastIndexOf('\n', lastNewline - 1) >= 0) break;
    }
    const lastNewline = text.lastIndexOf('\n');
    if (lastNewline < 0) return { first: null, last: null, size: 0, tornBytes: total };
    const size = from + lastNewline + 1;
    const lastLine = text.slice(text.lastIndexOf('\n', lastNewline - 1) + 1, lastNewline);
    const headBuf = Buffer.alloc(Math.min(CHUNK, size));
    await fd.read(headBuf, 0, headBuf.length, 0);
    const firstLine = headBuf.toString('latin1').split('\n', 1)[0]!;
    const decode = (line: string) => parseEntryLine(Buffer.from(line, 'latin1').toString('utf8'));
    const first = decode(firstLine);
    const last = decode(lastLine);
    if ('error' in first) throw new AuditFileError(path.basename(file), `line 1: ${first.error}`);
    if ('error' in last) throw new AuditFileError(path.basename(file), `last line: ${last.error}`);
    return { first: first.entry, last: last.entry, size, tornBytes: total - size };
  } finally {
    await fd.close();
  }
}

/**
 * Call `onLine` with each complete line of a log file, in order, reading it in
 * chunks: a busy day's file can be larger than a JavaScript string may be (and
 * than the memory a verifier should need). Resolves with the number of complete
 * lines and what follows the last newline (a torn write, or '').
 */
export async function forEachLine(
  file: string,
  onLine: (text: string, line: number) => void,
  chunkBytes = 1024 * 1024,
  /** Start here (a line's first byte) instead of at the file's start; lines are counted from there. */
  fromByte = 0,
): Promise<{ lines: number; torn: string }> {
  const fd = await open(file, 'r');
  try {
    let lines = 0;
    let position = fromByte;
    /** The start of a line whose end is in a later chunk. */
    let carry: Buffer[] = [];
    for (;;) {
      const { bytesRead, buffer } = await fd.read(Buffer.allocUnsafe(chunkBytes), 0, chunkBytes, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const data = buffer.subarray(0, bytesRead);
      let start = 0;
      for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10, start)) {
        // Split on bytes, then decode: a newline byte is never part of a multi-byte UTF-8 character.
        const tail = data.subarray(start, nl);
        onLine((carry.length > 0 ? Buffer.concat([...carry, tail]) : tail).toString('utf8'), ++lines);
        carry = [];
        start = nl + 1;
      }
      if (start < data.length) carry.push(data.subarray(start));
    }
    return { lines, torn: Buffer.concat(carry).toString('utf8') };
  } finally {
    await fd.close();
  }
}

/**
 * Bytes of a log file up to the end of the last line whose entry `keep` accepts, and how many
 * complete lines follow it (read through once: only for a tail the writer will not extend).
 */
export async function lengthThroughLast(file: string, keep: (entry: AuditEntry) => boolean): Promise<{ size: number; after: number }> {
  let offset = 0;
  let size = 0;
  let keptAt = 0;
  const { lines } = await forEachLine(file, (text, line) => {
    offset += Buffer.byteLength(text) + 1;
    const parsed = parseEntryLine(text);
    if ('entry' in parsed && keep(parsed.entry)) [size, keptAt] = [offset, line];
  });
  return { size, after: lines - keptAt };
}
