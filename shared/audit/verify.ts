/**
 * The verifier behind `pulsevault audit verify`: walks every category's chain
 * file by file, line by line, and checks each file against its signed
 * checkpoint. It names each break by file, line and kind:
 *
 * - modified: a line whose hash does not match its content, or whose successor
 *   does not chain to it (rewritten with a recomputed hash), or a chain that
 *   differs from the signed checkpoint;
 * - deleted: entries missing inside a file (a gap in seq that never fills);
 * - inserted: an extra line (a second entry for a seq, an entry that belongs to
 *   another file, lines appended after the file was closed);
 * - reordered: entries present but out of order;
 * - truncated: a file shorter than its signed checkpoint, or a torn last line;
 * - missing day: a whole file gone (a checkpoint without its file, a chain that
 *   jumps between files, a closed file with no successor, a chain that does not
 *   start at the beginning);
 * - bad checkpoint: a checkpoint (or the manifest) that is missing, unparseable
 *   or not signed with AUDIT_SIGNING_KEY.
 * - a file the signed manifest lists but that is gone is a missing day, even
 *   when its checkpoint went with it (a category's only or newest day).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { CHECKPOINT_DIR, MANIFEST_FILE, readCheckpoint, readManifest, type CheckpointRead } from './checkpoint.js';
import { GENESIS_HASH, parseLogFileName, utcDay, type AuditCategory, type AuditEntry } from './entry.js';
import { listLogFiles, parseEntryLine, type LogFile } from './files.js';

export type BreakKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'truncated' | 'missing day' | 'bad checkpoint';

export interface Break {
  file: string;
  /** 1-based line, or null when the break concerns the file as a whole. */
  line: number | null;
  kind: BreakKind;
  detail: string;
}

export interface FileSummary {
  file: string;
  entries: number;
  firstSeq: number | null;
  lastSeq: number | null;
  checkpoint: string;
  ok: boolean;
}

export interface VerifyReport {
  files: FileSummary[];
  breaks: Break[];
}

export interface VerifyOptions {
  /** First and last UTC day (YYYY-MM-DD) to verify, inclusive. */
  from?: string;
  to?: string;
  category?: AuditCategory;
}

interface Link {
  seq: number;
  hash: string;
}

export async function verifyAuditLog(auditDir: string, signingKey: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { files: [], breaks: [] };
  const inRange = (day: string) => (!options.from || day >= options.from) && (!options.to || day <= options.to);
  const all = await listLogFiles(auditDir);
  for (const [category, files] of all) {
    if (options.category && category !== options.category) continue;
    const selected = files.filter((f) => inRange(f.day));
    const startsAtBeginning = selected[0] === files[0];
    const endsAtEnd = selected[selected.length - 1] === files[files.length - 1];
    await verifyCategory(auditDir, signingKey, selected, { startsAtBeginning, endsAtEnd }, report);
  }
  const present = new Set([...all.values()].flat().map((f) => f.name));
  /** A log file this run covers (its day in range, its category selected) that is not on disk. */
  const goneFromRun = (name: string) => {
    const parsed = parseLogFileName(name);
    return parsed !== null && !present.has(name) && inRange(parsed.day) && (!options.category || parsed.category === options.category);
  };
  await findOrphanCheckpoints(auditDir, goneFromRun, report);
  await checkManifest(auditDir, signingKey, present.size > 0, goneFromRun, report);
  report.breaks.sort((a, b) => (a.file === b.file ? (a.line ?? 0) - (b.line ?? 0) : a.file < b.file ? -1 : 1));
  return report;
}

async function verifyCategory(
  auditDir: string,
  key: string,
  files: LogFile[],
  scope: { startsAtBeginning: boolean; endsAtEnd: boolean },
  report: VerifyReport,
): Promise<void> {
  let prev: (Link & { file: string; final: boolean; truncated: boolean }) | null = null;
  for (const [index, file] of files.entries()) {
    const cp = await readCheckpoint(auditDir, file.name, key);
    const breaksBefore = report.breaks.length;
    const add = (line: number | null, kind: BreakKind, detail: string) => report.breaks.push({ file: file.name, line, kind, detail });
    const text = await readFile(path.join(auditDir, file.name), 'utf8');
    const lines = text.split('\n');
    const torn = lines.pop() ?? '';

    // Where this file should join the chain.
    const anchor: Link | null = prev
      ? { seq: prev.seq, hash: prev.hash }
      : scope.startsAtBeginning
        ? { seq: 0, hash: GENESIS_HASH }
        : cp.state === 'valid'
          ? { seq: cp.checkpoint.firstSeq - 1, hash: cp.checkpoint.chainIn }
          : null; // --from without a checkpoint: trust the first line's link
    const entries = walkLines(file, lines, anchor, cp, prev, add);
    if (torn !== '') add(lines.length + 1, 'truncated', 'incomplete last line (a write cut short)');

    const bySeq = new Map(entries.map((e) => [e.entry.seq, e]));
    // A loop, not Math.max(...seqs): a busy day has more entries than a call can take arguments.
    const lastSeq = entries.reduce<number | null>((max, e) => (max === null || e.entry.seq > max ? e.entry.seq : max), null);
    let truncated = false;
    let cpText: string;
    if (cp.state === 'absent') {
      cpText = 'none';
      // Legitimate only for the newest file before its first checkpoint, and only if the previous file was not closed yet.
      const newest = index === files.length - 1 && scope.endsAtEnd;
      if (!newest || prev?.final) add(null, 'bad checkpoint', 'checkpoint file is missing');
    } else if (cp.state === 'invalid') {
      cpText = 'INVALID';
      add(null, 'bad checkpoint', cp.why);
    } else {
      const c = cp.checkpoint;
      cpText = `seq ${c.seq}${c.final ? ' (closed)' : ''}`;
      const at = bySeq.get(c.seq);
      if (lastSeq === null || lastSeq < c.seq) {
        truncated = true;
        add(lines.length + 1, 'truncated', `file ends at seq ${lastSeq ?? 'none'} but its signed checkpoint covers up to seq ${c.seq}`);
      } else if (at && at.entry.hash !== c.hash) {
        add(at.line, 'modified', `entry seq ${c.seq} differs from the signed checkpoint (chain rewritten at or before this line)`);
      }
      if (c.final) {
        const extra = entries.find((e) => e.entry.seq > c.seq);
        if (extra) add(extra.line, 'inserted', `entry seq ${extra.entry.seq} appended after the file was closed at seq ${c.seq}`);
        if (index === files.length - 1 && scope.endsAtEnd) add(null, 'missing day', 'the file was closed for a later day, but no later file exists');
      }
    }

    const last = entries[entries.length - 1]?.entry;
    report.files.push({
      file: file.name,
      entries: entries.length,
      firstSeq: entries[0]?.entry.seq ?? null,
      lastSeq,
      checkpoint: cpText,
      ok: report.breaks.length === breaksBefore,
    });
    if (last) prev = { seq: last.seq, hash: last.hash, file: file.name, final: cp.state === 'valid' && cp.checkpoint.final, truncated };
    else prev = null;
  }
}

interface Located {
  entry: AuditEntry;
  line: number;
}

/** Check every line's hash and its link to the line before; classify what breaks. */
function walkLines(
  file: LogFile,
  lines: string[],
  anchor: Link | null,
  cp: CheckpointRead,
  prev: { file: string; truncated: boolean } | null,
  add: (line: number | null, kind: BreakKind, detail: string) => void,
): Located[] {
  const parsed = lines.map((text, i) => ({ line: i + 1, result: parseEntryLine(text) }));
  const accepted: Located[] = [];
  const seen = new Map<number, Located>();
  const reordered = new Set<number>();
  // Seqs still to come at each position, to tell a reordering (it shows up later) from a deletion (it never does).
  const remaining = new Map<number, number>();
  for (const p of parsed) if ('entry' in p.result) remaining.set(p.result.entry.seq, (remaining.get(p.result.entry.seq) ?? 0) + 1);

  let expectedSeq = anchor ? anchor.seq + 1 : null;
  let expectedPrev: string | null = anchor?.hash ?? null;
  for (const [i, { line, result }] of parsed.entries()) {
    if ('error' in result) {
      add(line, 'modified', result.error);
      if (expectedSeq !== null) expectedSeq += 1;
      expectedPrev = null; // unknown: the next line's link cannot be checked
      continue;
    }
    const e = result.entry;
    remaining.set(e.seq, remaining.get(e.seq)! - 1);
    if (e.category !== file.category || utcDay(e.ts) !== file.day) {
      add(line, 'inserted', `entry of ${e.category} on ${utcDay(e.ts)} does not belong in this file`);
      continue;
    }
    const here: Located = { entry: e, line };
    if (expectedSeq === null) expectedSeq = e.seq; // unanchored start (--from, no checkpoint)

    if (e.seq === expectedSeq) {
      if (expectedPrev !== null && e.prevHash !== expectedPrev) {
        if (i === 0) boundaryBreak(e, cp, prev, add);
        else add(line - 1, 'modified', `rewritten: line ${line} (seq ${e.seq}) chains to a different hash`);
      }
    } else if (e.seq > expectedSeq) {
      const from = expectedSeq;
      const comesLater = [...remaining].filter(([s, n]) => n > 0 && s >= from && s < e.seq).map(([s]) => s);
      if (comesLater.length > 0) {
        add(line, 'reordered', `seq ${e.seq} comes before seq ${comesLater.sort((a, b) => a - b).join(', ')}`);
        for (const s of comesLater) reordered.add(s);
      } else if (i === 0) {
        if (cp.state === 'valid' && cp.checkpoint.firstSeq < e.seq) add(line, 'deleted', `seq ${cp.checkpoint.firstSeq}..${e.seq - 1} missing from the start of the file`);
        else boundaryBreak(e, cp, prev, add);
      } else {
        add(line, 'deleted', `seq ${expectedSeq}..${e.seq - 1} missing before this line`);
      }
    } else {
      const earlier = seen.get(e.seq);
      if (earlier) {
        const next = parsed[i + 1]?.result;
        const nextChainsHere = next && 'entry' in next && next.entry.prevHash === e.hash;
        if (nextChainsHere && earlier.entry.hash !== e.hash) add(earlier.line, 'inserted', `forged entry for seq ${e.seq} (the chain continues from line ${line})`);
        else add(line, 'inserted', `second entry for seq ${e.seq} (first at line ${earlier.line})`);
      } else if (!reordered.has(e.seq)) {
        add(line, 'reordered', `seq ${e.seq} comes after seq ${expectedSeq - 1}`);
      }
      seen.set(e.seq, seen.get(e.seq) ?? here);
      continue;
    }
    seen.set(e.seq, here);
    accepted.push(here);
    expectedSeq = e.seq + 1;
    expectedPrev = e.hash;
  }
  return accepted;
}

/** The file's first line does not continue the previous file: which kind of break is it? */
function boundaryBreak(
  first: AuditEntry,
  cp: CheckpointRead,
  prev: { file: string; truncated: boolean } | null,
  add: (line: number | null, kind: BreakKind, detail: string) => void,
): void {
  if (prev?.truncated) return; // already reported as the previous file's truncation
  const startIntact = cp.state !== 'valid' || (cp.checkpoint.firstSeq === first.seq && cp.checkpoint.chainIn === first.prevHash);
  if (!startIntact) return add(1, 'modified', 'first entry differs from the signed checkpoint');
  add(
    1,
    'missing day',
    prev ? `chain does not continue from ${prev.file}: a day between them is missing (next seq here is ${first.seq})` : `chain starts at seq ${first.seq}: earlier days are missing`,
  );
}

/** Every file the signed manifest lists must exist; without a valid manifest, nothing proves none was deleted. */
async function checkManifest(auditDir: string, key: string, anyLogFile: boolean, goneFromRun: (logName: string) => boolean, report: VerifyReport): Promise<void> {
  const read = await readManifest(auditDir, key);
  const where = `${CHECKPOINT_DIR}/${MANIFEST_FILE}`;
  if (read.state === 'absent') {
    if (anyLogFile) report.breaks.push({ file: where, line: null, kind: 'bad checkpoint', detail: 'the signed manifest of audit files is missing' });
    return;
  }
  if (read.state === 'invalid') return void report.breaks.push({ file: where, line: null, kind: 'bad checkpoint', detail: `manifest: ${read.why}` });
  const reported = new Set(report.breaks.filter((b) => b.kind === 'missing day').map((b) => b.file));
  for (const name of read.manifest.files) {
    if (!goneFromRun(name) || reported.has(name)) continue;
    report.breaks.push({ file: name, line: null, kind: 'missing day', detail: 'listed in the signed manifest, but the log file is gone' });
  }
}

async function findOrphanCheckpoints(auditDir: string, goneFromRun: (logName: string) => boolean, report: VerifyReport): Promise<void> {
  let names: string[];
  try {
    names = await readdir(path.join(auditDir, CHECKPOINT_DIR));
  } catch {
    return;
  }
  for (const name of names) {
    const logName = name.replace(/\.checkpoint\.json$/, '.log');
    if (!goneFromRun(logName)) continue;
    report.breaks.push({ file: logName, line: null, kind: 'missing day', detail: 'its signed checkpoint exists but the log file is gone' });
  }
}
