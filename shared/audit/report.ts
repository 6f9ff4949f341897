/**
 * The accounting of disclosures (`pulsevault audit report`, `GET /admin/audit/report`):
 * every entry naming a video and/or a subject pseudonym over a range of days, taken
 * only from chain segments that verify, and every break in that range reported as a
 * break (file, line, kind, and how many matching lines it withholds), never skipped.
 *
 * Per file it reads the signed report index (report-index.ts) when there is one that
 * still fits the file and its signed checkpoint: only the matching lines are read, and
 * each is re-hashed and compared with the hash it had when the chain verified. Lines
 * appended since are walked from the index's last link. Anything that does not add up
 * (no index, an index for another size, a line that changed, a checkpoint beyond the
 * file) falls back to verifying the whole file (verify.ts) and scanning it, and, when
 * asked and the chain is intact, writing a fresh index: a lost or stale index costs
 * time, never a fact. Files are joined per category (each one's first entry must
 * continue the previous file's last) and held against the signed manifest, so a
 * deleted day inside the range is a `missing day`.
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import type { AuditAction } from './actions.js';
import { readCheckpoint, type Checkpoint } from './checkpoint.js';
import { AUDIT_CATEGORIES, entryMacKey, hasValidMac, type AuditCategory, type AuditEntry } from './entry.js';
import { forEachLine, listLogFiles, parseEntryLine, type LogFile } from './files.js';
import { IndexBuilder, ReportIndex, subjectKey, videoKey } from './report-index.js';
import { checkManifest, findOrphanCheckpoints, verifyAuditLog, type Break, type VerifyReport } from './verify.js';

export interface ReportQuery {
  videoId?: string;
  /**
   * Subject pseudonyms (`sub-…`, shared/audit/subject.ts), never a raw subject: one
   * subject's under the current HMAC_SECRET and, after a rotation, the previous one.
   */
  subjects?: string[];
  /** First and last UTC day (YYYY-MM-DD), inclusive. */
  from?: string;
  to?: string;
  category?: AuditCategory;
}

/** One reported entry: a fact from a verified chain segment. */
export interface ReportLine {
  time: string;
  occurredAt: string;
  category: AuditCategory;
  action: AuditAction;
  outcome: string;
  reason: string | null;
  subject: string | null;
  role: string | null;
  videoId: string | null;
  /** The path within the video (rendition, file, signed scope); null when the entry names none. */
  resource: string | null;
  clientIp: string | null;
  requestId: string | null;
  seq: number;
  file: string;
  line: number;
}

export interface ReportBreak extends Break {
  day: string | null;
  category: AuditCategory | null;
  /** Matching lines of this file not reported because they are not in a verified segment. */
  withheld: number;
}

export interface AuditReport {
  query: ReportQuery;
  lines: ReportLine[];
  breaks: ReportBreak[];
  /** Files read, and how many of them through their index. */
  files: number;
  indexed: number;
}

export interface ReportOptions {
  /** Write an index for a file that had none (or a stale one) once its chain verified. */
  buildIndex?: boolean;
  /** Let an index that cannot be written fail the call (a rebuild that writes nothing is no rebuild). */
  indexRequired?: boolean;
}

/** Where a file's verified lines join the chain and where they end. */
interface FileLinks {
  firstSeq: number;
  chainIn: string;
  lastSeq: number;
  lastHash: string;
}

interface FileResult {
  lines: ReportLine[];
  breaks: Break[];
  /** Matching lines withheld (after the file's first break). */
  withheld: number;
  links: FileLinks | null;
  indexed: boolean;
}

export async function auditReport(auditDir: string, signingKey: string, query: ReportQuery, options: ReportOptions = {}): Promise<AuditReport> {
  if (!query.videoId && !query.subjects?.length) throw new Error('a report needs a video or a subject');
  const inRange = (day: string) => (!query.from || day >= query.from) && (!query.to || day <= query.to);
  const report: AuditReport = { query, lines: [], breaks: [], files: 0, indexed: 0 };
  const all = await listLogFiles(auditDir);
  for (const category of AUDIT_CATEGORIES) {
    if (query.category && category !== query.category) continue;
    let previous: { file: string; links: FileLinks } | null = null;
    for (const file of (all.get(category) ?? []).filter((f) => inRange(f.day))) {
      const result = await reportFile(auditDir, signingKey, file, query, options);
      report.files += 1;
      if (result.indexed) report.indexed += 1;
      const breaks = [...result.breaks];
      const joins = !previous || !result.links || (result.links.firstSeq === previous.links.lastSeq + 1 && result.links.chainIn === previous.links.lastHash);
      if (!joins && !breaks.some((b) => b.line === 1)) {
        breaks.push({ file: file.name, line: 1, kind: 'missing day', detail: `chain does not continue from ${previous!.file}` });
      }
      report.lines.push(...result.lines);
      breaks.forEach((b, i) => report.breaks.push({ ...b, day: file.day, category, withheld: i === 0 ? result.withheld : 0 }));
      previous = result.links ? { file: file.name, links: result.links } : null;
    }
  }
  // Days gone from the range: listed in the signed manifest (or a checkpoint left behind), no log file.
  const present = new Set([...all.values()].flat().map((f) => f.name));
  const gone = (name: string) => {
    const m = /^(access|upload|transcode|admin)-(\d{4}-\d{2}-\d{2})\.log$/.exec(name);
    return m !== null && !present.has(name) && inRange(m[2]!) && (!query.category || m[1] === query.category);
  };
  const elsewhere: VerifyReport = { files: [], breaks: [], notes: [] };
  await findOrphanCheckpoints(auditDir, gone, elsewhere);
  await checkManifest(auditDir, signingKey, present.size > 0, gone, elsewhere);
  const reported = new Set(elsewhere.breaks.map((b) => `${b.file} ${b.kind}`));
  for (const b of elsewhere.breaks) {
    if (reported.delete(`${b.file} ${b.kind}`)) report.breaks.push({ ...b, ...dayAndCategory(b.file), withheld: 0 });
  }
  report.lines.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.category < b.category ? -1 : a.category > b.category ? 1 : a.seq - b.seq));
  return report;
}

/** The codes of a volume that may not be written (mounted read-only, or not ours). */
export function isUnwritable(err: unknown): boolean {
  return ['EROFS', 'EACCES', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '');
}

/**
 * An index that cannot be written (the audit volume mounted read-only, k8s/) only costs the next
 * report a verification, unless the caller is there to write it.
 */
async function writeIndex(auditDir: string, key: string, builder: IndexBuilder, header: Parameters<IndexBuilder['write']>[1], required: boolean): Promise<void> {
  try {
    await builder.write(auditDir, header, key);
  } catch (err) {
    if (required || !isUnwritable(err)) throw err;
  }
}

/** A query no entry matches (no pseudonym is empty). */
const NOTHING: ReportQuery = { subjects: [''] };

/** Verify one file and write its index afresh when its chain is intact; the breaks that kept it from being indexed. */
export async function reindexFile(auditDir: string, signingKey: string, file: LogFile): Promise<Break[]> {
  return (await verifyAndScan(auditDir, signingKey, file, NOTHING, { buildIndex: true, indexRequired: true })).breaks;
}

function dayAndCategory(file: string): { day: string | null; category: AuditCategory | null } {
  const m = /^(access|upload|transcode|admin)-(\d{4}-\d{2}-\d{2})\.log$/.exec(file);
  return m ? { day: m[2]!, category: m[1] as AuditCategory } : { day: null, category: null };
}

function matches(entry: Pick<AuditEntry, 'videoId' | 'actor'>, query: ReportQuery): boolean {
  return (!query.videoId || entry.videoId === query.videoId) && (!query.subjects?.length || (!!entry.actor?.userId && query.subjects.includes(entry.actor.userId)));
}

function reportLine(e: AuditEntry, file: string, line: number): ReportLine {
  return {
    time: e.ts,
    occurredAt: e.occurredAt,
    category: e.category,
    action: e.action,
    outcome: e.outcome,
    reason: e.reason,
    subject: e.actor?.userId ?? null,
    role: e.actor?.role ?? null,
    videoId: e.videoId,
    resource: e.resource ?? null,
    clientIp: e.clientIp,
    requestId: e.requestId,
    seq: e.seq,
    file,
    line,
  };
}

async function reportFile(auditDir: string, key: string, file: LogFile, query: ReportQuery, options: ReportOptions): Promise<FileResult> {
  const index = await ReportIndex.read(auditDir, file.name, key);
  if (index) {
    const fast = await fromIndex(auditDir, key, file, index, query, options);
    if (fast) return fast;
  }
  return verifyAndScan(auditDir, key, file, query, options);
}

/** The lines the index names, each checked against the verified chain; null when the index does not fit the file. */
async function fromIndex(auditDir: string, key: string, file: LogFile, index: ReportIndex, query: ReportQuery, options: ReportOptions): Promise<FileResult | null> {
  const { header } = index;
  const logPath = path.join(auditDir, file.name);
  const [{ size }, cp] = await Promise.all([stat(logPath), readCheckpoint(auditDir, file.name, key)]);
  if (cp.state !== 'valid' || size < header.size) return null;
  const checkpoint = cp.checkpoint;
  if (checkpoint.firstSeq !== header.firstSeq || checkpoint.chainIn !== header.chainIn) return null;
  const grown = size > header.size;
  if (grown && (checkpoint.final || options.buildIndex)) return null; // lines after a close are a break; a rebuild re-covers the tail
  if (checkpoint.seq <= header.lastSeq && !index.hashMatches(checkpoint.seq - header.firstSeq, checkpoint.hash)) return null;

  const wanted = candidateLines(index, query);
  const lines: ReportLine[] = [];
  const fd = await open(logPath, 'r');
  try {
    for (const i of wanted) {
      const start = index.offsetOf(i);
      const buf = Buffer.allocUnsafe(index.offsetOf(i + 1) - start - 1);
      await fd.read(buf, 0, buf.length, start);
      const parsed = parseEntryLine(buf.toString('utf8'));
      if ('error' in parsed || !index.hashMatches(i, parsed.entry.hash)) return null; // changed since it verified
      if (matches(parsed.entry, query)) lines.push(reportLine(parsed.entry, file.name, i + 1));
    }
  } finally {
    await fd.close();
  }
  let links: FileLinks = { firstSeq: header.firstSeq, chainIn: header.chainIn, lastSeq: header.lastSeq, lastHash: header.lastHash };
  if (grown || checkpoint.seq > header.lastSeq) {
    const tail = await walkTail(logPath, header.size, header.lines, links, checkpoint, key, file.name, query);
    if (!tail) return null;
    lines.push(...tail.lines);
    links = tail.links;
  }
  return { lines, breaks: [], withheld: 0, links, indexed: true };
}

/** The index's lines for the query (both keys: the lines naming both). */
function candidateLines(index: ReportIndex, query: ReportQuery): number[] {
  const byVideo = query.videoId ? index.linesOf(videoKey(query.videoId)) : null;
  const bySubject = query.subjects?.length ? [...new Set(query.subjects.flatMap((s) => index.linesOf(subjectKey(s))))].sort((a, b) => a - b) : null;
  if (byVideo && bySubject) {
    const subjectLines = new Set(bySubject);
    return byVideo.filter((l) => subjectLines.has(l));
  }
  return byVideo ?? bySubject ?? [];
}

/**
 * Lines appended after the indexed part: each must chain to the one before, up to the signed
 * checkpoint at least, and any beyond it up to a valid entry MAC (else verify names the break).
 */
async function walkTail(
  logPath: string,
  fromByte: number,
  linesBefore: number,
  start: FileLinks,
  checkpoint: Checkpoint,
  key: string,
  fileName: string,
  query: ReportQuery,
): Promise<{ lines: ReportLine[]; links: FileLinks } | null> {
  let { lastSeq, lastHash } = start;
  let broken = false;
  let sealedSeq = 0;
  const macKey = entryMacKey(key);
  const lines: ReportLine[] = [];
  await forEachLine(
    logPath,
    (text, n) => {
      if (broken) return;
      const parsed = parseEntryLine(text);
      if ('error' in parsed || parsed.entry.seq !== lastSeq + 1 || parsed.entry.prevHash !== lastHash) return void (broken = true);
      const e = parsed.entry;
      if (e.seq === checkpoint.seq && e.hash !== checkpoint.hash) return void (broken = true);
      if (e.mac !== undefined) {
        if (!hasValidMac(macKey, e)) return void (broken = true);
        sealedSeq = e.seq;
      }
      [lastSeq, lastHash] = [e.seq, e.hash];
      if (matches(e, query)) lines.push(reportLine(e, fileName, linesBefore + n));
    },
    undefined,
    fromByte,
  );
  if (broken || lastSeq < checkpoint.seq || lastSeq > Math.max(checkpoint.seq, sealedSeq)) return null;
  return { lines, links: { ...start, lastSeq, lastHash } };
}

/** The whole file verified (verify.ts), then scanned: facts up to its first break; an index when intact and asked for. */
async function verifyAndScan(auditDir: string, key: string, file: LogFile, query: ReportQuery, options: ReportOptions): Promise<FileResult> {
  const verified = await verifyAuditLog(auditDir, key, { from: file.day, to: file.day, category: file.category });
  const breaks = verified.breaks.filter((b) => b.file === file.name);
  const lastVerifiedSeq = verified.files.find((f) => f.file === file.name)?.lastSeq ?? 0;
  /** Lines before this one are a verified segment (a break of the whole file leaves none). */
  const factsBefore = breaks.length === 0 ? Infinity : Math.min(...breaks.map((b) => b.line ?? 0));
  const builder = breaks.length === 0 && options.buildIndex ? new IndexBuilder() : null;
  const lines: ReportLine[] = [];
  let withheld = 0;
  let offset = 0;
  /** Bytes up to the end of the last line given to the index. */
  let covered = 0;
  let first: AuditEntry | null = null;
  let last: AuditEntry | null = null;
  await forEachLine(path.join(auditDir, file.name), (text, n) => {
    const lineStart = offset;
    offset += Buffer.byteLength(text) + 1;
    if (lastVerifiedSeq === 0 || (last !== null && last.seq >= lastVerifiedSeq)) return; // appended after the verification
    const parsed = parseEntryLine(text);
    if ('error' in parsed) return; // a break verify reported
    const e = parsed.entry;
    if (n < factsBefore) {
      first ??= e;
      last = e;
      builder?.add(lineStart, e.hash, [e.videoId && videoKey(e.videoId), e.actor?.userId ? subjectKey(e.actor.userId) : null]);
      covered = offset;
    }
    if (!matches(e, query)) return;
    if (n < factsBefore) lines.push(reportLine(e, file.name, n));
    else withheld += 1;
  });
  const ends = first && last ? { first: first as AuditEntry, last: last as AuditEntry } : null;
  const links = ends && { firstSeq: ends.first.seq, chainIn: ends.first.prevHash, lastSeq: ends.last.seq, lastHash: ends.last.hash };
  if (builder && links) await writeIndex(auditDir, key, builder, { file: file.name, size: covered, ...links }, options.indexRequired === true);
  return { lines, breaks, withheld, links: breaks.length === 0 ? links : null, indexed: false };
}
