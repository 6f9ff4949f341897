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
 *   when its checkpoint went with it (a category's only or newest day);
 * - unsealed: entries after a file's signed checkpoint that no valid entry MAC
 *   vouches for (appended without AUDIT_SIGNING_KEY), or one there whose MAC
 *   does not match;
 * - rolled back: given the anchors kept in Redis (./anchor.ts), a category's
 *   chain that ends before its anchor or differs at it (an older copy of the
 *   volume put back), or an anchor a writer marked so.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { anchorKey, type Anchor } from './anchor.js';
import { CHECKPOINT_DIR, MANIFEST_FILE, readCheckpoint, readManifest, type CheckpointRead } from './checkpoint.js';
import { entryMacKey, GENESIS_HASH, hasValidMac, parseLogFileName, utcDay, type AuditCategory, type AuditEntry } from './entry.js';
import { forEachLine, listLogFiles, parseEntryLine, type LogFile, type ParsedLine } from './files.js';

export type BreakKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'truncated' | 'missing day' | 'bad checkpoint' | 'unsealed' | 'rolled back';

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
  /** What could not be checked, though nothing is broken (a category without an anchor). */
  notes: string[];
}

export interface VerifyOptions {
  /** First and last UTC day (YYYY-MM-DD) to verify, inclusive. */
  from?: string;
  to?: string;
  category?: AuditCategory;
  /** Each category's anchor as Redis holds it (./anchor.ts); without it no rollback is looked for. */
  anchors?: ReadonlyMap<AuditCategory, Anchor>;
}

interface Link {
  seq: number;
  hash: string;
}

export async function verifyAuditLog(auditDir: string, signingKey: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { files: [], breaks: [], notes: [] };
  const inRange = (day: string) => (!options.from || day >= options.from) && (!options.to || day <= options.to);
  const all = await listLogFiles(auditDir);
  const keys = { signing: signingKey, mac: entryMacKey(signingKey) };
  for (const [category, files] of all) {
    if (options.category && category !== options.category) continue;
    const selected = files.filter((f) => inRange(f.day));
    const startsAtBeginning = selected[0] === files[0];
    const endsAtEnd = selected[selected.length - 1] === files[files.length - 1];
    // The anchor is the category's newest head: it says something only about a run that reaches the newest file.
    const anchor = endsAtEnd && options.anchors ? (options.anchors.get(category) ?? null) : undefined;
    if (anchor === null && selected.length > 0) report.notes.push(`no anchor for ${category} in Redis (lost, or no checkpoint written since): a rollback of its files shows only against an off-volume copy of checkpoints/`);
    await verifyCategory(auditDir, keys, selected, { startsAtBeginning, endsAtEnd }, anchor ?? null, report);
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
  keys: { signing: string; mac: KeyObject },
  files: LogFile[],
  scope: { startsAtBeginning: boolean; endsAtEnd: boolean },
  redisAnchor: Anchor | null,
  report: VerifyReport,
): Promise<void> {
  let prev: (Link & { file: string; final: boolean; truncated: boolean }) | null = null;
  /** The accepted entry at the anchor's seq in the anchor's file, once walked (null: not there). */
  let atAnchor: { line: number; hash: string } | null | undefined;
  for (const [index, file] of files.entries()) {
    const cp = await readCheckpoint(auditDir, file.name, keys.signing);
    const breaksBefore = report.breaks.length;
    const add = (line: number | null, kind: BreakKind, detail: string) => report.breaks.push({ file: file.name, line, kind, detail });

    // Where this file should join the chain.
    const anchor: Link | null = prev
      ? { seq: prev.seq, hash: prev.hash }
      : scope.startsAtBeginning
        ? { seq: 0, hash: GENESIS_HASH }
        : cp.state === 'valid'
          ? { seq: cp.checkpoint.firstSeq - 1, hash: cp.checkpoint.chainIn }
          : null; // --from without a checkpoint: trust the first line's link
    const anchorSeq = redisAnchor?.file === file.name ? redisAnchor.seq : null;
    const walk: ChainWalk = new ChainWalk(file, anchor, cp, prev, keys.mac, anchorSeq, add);
    const { lines, torn } = await forEachLine(path.join(auditDir, file.name), (text, line) => walk.next(line, parseEntryLine(text)));
    const chain: WalkedChain = walk.end();
    if (anchorSeq !== null) atAnchor = chain.atAnchor;
    if (torn !== '') add(lines + 1, 'truncated', 'incomplete last line (a write cut short)');

    const lastSeq = chain.last?.seq ?? null;
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
      const at = chain.atCheckpoint;
      if (lastSeq === null || lastSeq < c.seq) {
        truncated = true;
        add(lines + 1, 'truncated', `file ends at seq ${lastSeq ?? 'none'} but its signed checkpoint covers up to seq ${c.seq}`);
      } else if (at && at.hash !== c.hash) {
        add(at.line, 'modified', `entry seq ${c.seq} differs from the signed checkpoint (chain rewritten at or before this line)`);
      }
      if (c.final) {
        const extra = chain.accepted.firstAbove(c.seq);
        if (extra) add(extra.line, 'inserted', `entry seq ${extra.seq} appended after the file was closed at seq ${c.seq}`);
        if (index === files.length - 1 && scope.endsAtEnd) add(null, 'missing day', 'the file was closed for a later day, but no later file exists');
      }
    }
    if (cp.state === 'absent' || (cp.state === 'valid' && !cp.checkpoint.final)) {
      // Past its checkpoint a file's entries are vouched for by the MAC of a later one (the chain links them to it).
      const checkpointed = cp.state === 'valid' ? cp.checkpoint.seq : 0;
      const unsealed = chain.accepted.firstAbove(Math.max(checkpointed, chain.sealedSeq));
      const named = (line: number) => report.breaks.slice(breaksBefore).some((b) => b.line === line && b.kind === 'unsealed'); // its MAC did not match
      if (unsealed && !named(unsealed.line)) add(unsealed.line, 'unsealed', `seq ${unsealed.seq}..${lastSeq} after the ${checkpointed ? `signed checkpoint (seq ${checkpointed})` : 'start of the file'} carry no valid MAC: appended without the key`);
    }

    report.files.push({
      file: file.name,
      entries: chain.accepted.length,
      firstSeq: chain.accepted.length > 0 ? chain.accepted.at(0).seq : null,
      lastSeq,
      checkpoint: cpText,
      ok: report.breaks.length === breaksBefore,
    });
    prev = chain.last ? { ...chain.last, file: file.name, final: cp.state === 'valid' && cp.checkpoint.final, truncated } : null;
  }
  const rolledBack = redisAnchor && anchorBreak(redisAnchor, files, prev, atAnchor);
  if (rolledBack) report.breaks.push(rolledBack);
}

/** Where the category's chain stands against its anchor in Redis: a break when it is behind it or not the chain anchored. */
function anchorBreak(anchor: Anchor, files: LogFile[], head: (Link & { file: string }) | null, atAnchor: { line: number; hash: string } | null | undefined): Break | null {
  const what = `its anchor in Redis (seq ${anchor.seq} in ${anchor.file}, checkpointed at ${anchor.at})`;
  if (anchor.rolledBack) {
    return { file: anchor.file, line: null, kind: 'rolled back', detail: `a writer found the files ending at seq ${anchor.rolledBack.volumeSeq}, behind ${what}, at ${anchor.rolledBack.at}; marked until the key ${anchorKey(files[0]!.category)} is deleted` };
  }
  const newest = files[files.length - 1]?.name ?? anchor.file;
  if (!head || head.seq < anchor.seq) return { file: newest, line: null, kind: 'rolled back', detail: `the chain ends at seq ${head?.seq ?? 'none'}, before ${what}: an older copy of the volume put back` };
  if (atAnchor === undefined) {
    // Not walked: outside the range, or its file gone.
    const day = parseLogFileName(anchor.file)?.day ?? '';
    if (day < files[0]!.day) return null;
    return { file: anchor.file, line: null, kind: 'rolled back', detail: `the file of ${what} is not on the volume` };
  }
  if (atAnchor === null || atAnchor.hash !== anchor.hash) return { file: anchor.file, line: atAnchor?.line ?? null, kind: 'rolled back', detail: `the chain at seq ${anchor.seq} is not the one anchored by ${what}: a different chain put in its place` };
  return null;
}

/** An accepted entry as the walk keeps it (hashKey: see AcceptedEntries). */
interface AcceptedEntry {
  seq: number;
  line: number;
  hashKey: number;
}

/** The first index in [0, length) at which `before(i)` is false (it is true up to some index, false after). */
function firstIndexNotBefore(length: number, before: (i: number) => boolean): number {
  let [lo, hi] = [0, length];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (before(mid)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The entries a walk accepted into the chain, in order, their seqs strictly
 * increasing: columns of numbers rather than objects, so that a busy day's file
 * (millions of lines) is walked in tens of megabytes. A hash is kept as its
 * first 52 bits (hashKey), enough to tell a forged copy from an exact one; the
 * full hashes the verdict depends on are kept by the walk itself.
 */
class AcceptedEntries {
  private seqs = new Float64Array(1024);
  private lines = new Float64Array(1024);
  private hashKeys = new Float64Array(1024);
  length = 0;

  push(seq: number, line: number, hash: string): void {
    if (this.length === this.seqs.length) {
      const grow = (a: Float64Array) => {
        const bigger = new Float64Array(a.length * 2);
        bigger.set(a);
        return bigger;
      };
      [this.seqs, this.lines, this.hashKeys] = [grow(this.seqs), grow(this.lines), grow(this.hashKeys)];
    }
    this.seqs[this.length] = seq;
    this.lines[this.length] = line;
    this.hashKeys[this.length] = hashKey(hash);
    this.length += 1;
  }

  at(i: number): AcceptedEntry {
    return { seq: this.seqs[i]!, line: this.lines[i]!, hashKey: this.hashKeys[i]! };
  }

  /** The entry with this seq, if accepted. */
  find(seq: number): AcceptedEntry | null {
    const i = this.firstAtOrAbove(seq);
    return i < this.length && this.seqs[i] === seq ? this.at(i) : null;
  }

  /** The first entry with a seq above this one, if any. */
  firstAbove(seq: number): AcceptedEntry | null {
    const i = this.firstAtOrAbove(seq + 1);
    return i < this.length ? this.at(i) : null;
  }

  private firstAtOrAbove(seq: number): number {
    return firstIndexNotBefore(this.length, (i) => this.seqs[i]! < seq);
  }
}

const hashKey = (hash: string): number => Number.parseInt(hash.slice(0, 13), 16);

interface WalkedChain {
  accepted: AcceptedEntries;
  last: Link | null;
  /** The accepted entry at the signed checkpoint's seq. */
  atCheckpoint: { line: number; hash: string } | null;
  /** The accepted entry at the anchor's seq, when it was asked for. */
  atAnchor: { line: number; hash: string } | null;
  /** The last accepted entry with a valid MAC (0: none). */
  sealedSeq: number;
}

/** Seqs skipped by a jump forward: reordered if some turn up later in the file, deleted if none does. */
interface Gap {
  line: number;
  seq: number;
  from: number;
  /** Exclusive. */
  to: number;
  later: Set<number>;
  /** The break when nothing turns up. */
  ifMissing: () => void;
}

/**
 * Check every line's hash and its link to the line before, one line at a time
 * (each is judged with the next in view: a forged copy is one the chain
 * continues from); classify what breaks. Whether skipped seqs were reordered
 * or deleted shows only once the file has been read (end()).
 */
class ChainWalk {
  readonly accepted = new AcceptedEntries();
  /** First occurrences of seqs that were not accepted (late or repeated): as rare as the breaks. */
  private readonly strays = new Map<number, Omit<AcceptedEntry, 'seq'>>();
  private readonly gaps: Gap[] = [];
  private expectedSeq: number | null;
  private expectedPrev: string | null;
  private held: { line: number; parsed: ParsedLine } | null = null;
  private last: Link | null = null;
  private atCheckpoint: { line: number; hash: string } | null = null;
  private atAnchor: { line: number; hash: string } | null = null;
  private sealedSeq = 0;

  constructor(
    private readonly file: LogFile,
    anchor: Link | null,
    private readonly cp: CheckpointRead,
    private readonly prev: { file: string; truncated: boolean } | null,
    private readonly macKey: KeyObject,
    private readonly anchorSeq: number | null,
    private readonly add: (line: number | null, kind: BreakKind, detail: string) => void,
  ) {
    this.expectedSeq = anchor ? anchor.seq + 1 : null;
    this.expectedPrev = anchor?.hash ?? null;
  }

  next(line: number, parsed: ParsedLine): void {
    if (this.held) this.judge(this.held.line, this.held.parsed, parsed);
    this.held = { line, parsed };
  }

  end(): WalkedChain {
    if (this.held) this.judge(this.held.line, this.held.parsed, undefined);
    this.held = null;
    for (const gap of this.gaps) {
      if (gap.later.size > 0) this.add(gap.line, 'reordered', `seq ${gap.seq} comes before seq ${[...gap.later].sort((a, b) => a - b).join(', ')}`);
      else gap.ifMissing();
    }
    return { accepted: this.accepted, last: this.last, atCheckpoint: this.atCheckpoint, atAnchor: this.atAnchor, sealedSeq: this.sealedSeq };
  }

  private judge(line: number, parsed: ParsedLine, next: ParsedLine | undefined): void {
    const { add, cp, prev } = this;
    if ('error' in parsed) {
      add(line, 'modified', parsed.error);
      if (this.expectedSeq !== null) this.expectedSeq += 1;
      this.expectedPrev = null; // unknown: the next line's link cannot be checked
      return;
    }
    const e = parsed.entry;
    // A seq inside an earlier jump turns up late: that jump was a reordering.
    const gap = this.gapOf(e.seq);
    gap?.later.add(e.seq);
    if (e.category !== this.file.category || utcDay(e.ts) !== this.file.day) {
      add(line, 'inserted', `entry of ${e.category} on ${utcDay(e.ts)} does not belong in this file`);
      return;
    }
    this.expectedSeq ??= e.seq; // unanchored start (--from, no checkpoint)
    const expectedSeq = this.expectedSeq;

    if (e.seq === expectedSeq) {
      if (this.expectedPrev !== null && e.prevHash !== this.expectedPrev) {
        if (line === 1) boundaryBreak(e, cp, prev, add);
        else add(line - 1, 'modified', `rewritten: line ${line} (seq ${e.seq}) chains to a different hash`);
      }
    } else if (e.seq > expectedSeq) {
      const ifMissing =
        line === 1
          ? () => {
              if (cp.state === 'valid' && cp.checkpoint.firstSeq < e.seq) add(line, 'deleted', `seq ${cp.checkpoint.firstSeq}..${e.seq - 1} missing from the start of the file`);
              else boundaryBreak(e, cp, prev, add);
            }
          : () => add(line, 'deleted', `seq ${expectedSeq}..${e.seq - 1} missing before this line`);
      this.gaps.push({ line, seq: e.seq, from: expectedSeq, to: e.seq, later: new Set(), ifMissing });
    } else {
      const earlier = this.accepted.find(e.seq) ?? this.strays.get(e.seq);
      if (earlier) {
        const nextChainsHere = next && 'entry' in next && next.entry.prevHash === e.hash;
        if (nextChainsHere && earlier.hashKey !== hashKey(e.hash)) add(earlier.line, 'inserted', `forged entry for seq ${e.seq} (the chain continues from line ${line})`);
        else add(line, 'inserted', `second entry for seq ${e.seq} (first at line ${earlier.line})`);
      } else {
        if (!gap) add(line, 'reordered', `seq ${e.seq} comes after seq ${expectedSeq - 1}`);
        this.strays.set(e.seq, { line, hashKey: hashKey(e.hash) });
      }
      return;
    }
    this.accepted.push(e.seq, line, e.hash);
    if (cp.state === 'valid' && e.seq === cp.checkpoint.seq) this.atCheckpoint = { line, hash: e.hash };
    if (e.seq === this.anchorSeq) this.atAnchor = { line, hash: e.hash };
    // Only past the checkpoint does a MAC vouch for anything (checking each of a busy day's would cost a third of a verify).
    if (e.mac !== undefined && !(cp.state === 'valid' && e.seq <= cp.checkpoint.seq)) {
      if (hasValidMac(this.macKey, e)) this.sealedSeq = e.seq;
      else add(line, 'unsealed', 'its MAC does not match (forged, or made with another key)');
    }
    this.last = { seq: e.seq, hash: e.hash };
    this.expectedSeq = e.seq + 1;
    this.expectedPrev = e.hash;
  }

  /** The gap this seq falls in (gaps are disjoint and ascending). */
  private gapOf(seq: number): Gap | undefined {
    const gap = this.gaps[firstIndexNotBefore(this.gaps.length, (i) => this.gaps[i]!.to <= seq)];
    return gap && gap.from <= seq ? gap : undefined;
  }
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
export async function checkManifest(auditDir: string, key: string, anyLogFile: boolean, goneFromRun: (logName: string) => boolean, report: VerifyReport): Promise<void> {
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

export async function findOrphanCheckpoints(auditDir: string, goneFromRun: (logName: string) => boolean, report: VerifyReport): Promise<void> {
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
