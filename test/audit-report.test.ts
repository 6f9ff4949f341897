/**
 * The accounting of disclosures over a small synthetic chain written with the real
 * chain code (scripts/bench/audit-volume.ts): what the report lists by video and by
 * subject, that its index speeds it up without ever being trusted alone (a changed
 * line, a forged or stale index), breaks reported with the lines they withhold, and
 * the CLI's report, reindex and export.
 */
import { execFile } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditReport, type AuditReport } from '../shared/audit/report.js';
import { checkpointPath, signCheckpoint, writeCheckpoint } from '../shared/audit/checkpoint.js';
import { indexPath } from '../shared/audit/report-index.js';
import { toEcs } from '../shared/audit/export.js';
import type { AuditEntry } from '../shared/audit/entry.js';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { writeAuditVolume } from '../scripts/bench/audit-volume.js';
import { findPhi } from './helpers/phi.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/stack.js';

const run = promisify(execFile);
const VIDEOS = ['0b7c6a52-9d7e-4c1e-8f3a-5d2b9e1c4a10', '1c8d7b63-ae8f-4d2f-9a4b-6e3caf2d5b21', '2d9e8c74-bf90-4e30-8b5c-7f4db03e6c32'];
const RAW_SUBJECTS = ['josé@example.org', 'CONTOSO\\jdoe', 'dr.who'];
const SUBJECTS = RAW_SUBJECTS.map((s) => subjectPseudonym(TEST_HMAC_SECRET, s));
const DAYS = ['2026-03-01', '2026-03-02', '2026-03-03'];
const PER_DAY = 300;

let pristine: string;
const scratch: string[] = [];

beforeAll(async () => {
  pristine = mkdtempSync(path.join(tmpdir(), 'pv-audit-report-'));
  await writeAuditVolume(pristine, TEST_AUDIT_KEY, { firstDay: DAYS[0]!, days: DAYS.length, perDay: PER_DAY, videos: VIDEOS, subjects: SUBJECTS });
});

afterAll(() => {
  for (const dir of [pristine, ...scratch]) rmSync(dir, { recursive: true, force: true });
});

function copy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-audit-report-mut-'));
  scratch.push(dir);
  cpSync(pristine, dir, { recursive: true });
  return dir;
}

/** Every entry of the chain, parsed, the way a script over the raw files would read them. */
function allEntries(dir: string): { seq: number; videoId: string; actor: { userId: string }; outcome: string; requestId: string }[] {
  return DAYS.flatMap((day) =>
    readFileSync(path.join(dir, `access-${day}.log`), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l)),
  );
}

const seqs = (r: AuditReport) => r.lines.map((l) => l.seq);

describe('audit report', () => {
  it('lists exactly the entries of a video, of a subject, and of both, each with its fields, the same with and without an index', async () => {
    const dir = copy();
    const entries = allEntries(dir);
    const cold = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[1] }, { buildIndex: true });
    expect(cold.breaks).toEqual([]);
    expect(cold.indexed).toBe(0);
    expect(seqs(cold)).toEqual(entries.filter((e) => e.videoId === VIDEOS[1]).map((e) => e.seq));
    expect(existsSync(indexPath(dir, 'access-2026-03-02.log'))).toBe(true);
    const denied = cold.lines.find((l) => l.outcome === 'denied')!;
    expect(denied).toMatchObject({ category: 'access', action: 'stream', reason: 'token_expired', videoId: VIDEOS[1], role: 'viewer' });
    expect(denied.subject).toMatch(/^sub-[0-9a-f]{32}$/);
    expect(denied.clientIp).toMatch(/^10\.\d+\.\d+\.0$/);
    expect(denied.requestId).toMatch(/^req-/);

    const warm = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[1] });
    expect(warm.indexed).toBe(DAYS.length);
    expect(warm.lines).toEqual(cold.lines);

    const bySubject = await auditReport(dir, TEST_AUDIT_KEY, { subjects: [SUBJECTS[2]!] });
    expect(seqs(bySubject)).toEqual(entries.filter((e) => e.actor.userId === SUBJECTS[2]).map((e) => e.seq));
    // The synthetic viewer n watches video n (mod 3) only.
    const both = await auditReport(dir, TEST_AUDIT_KEY, { subjects: [SUBJECTS[2]!], videoId: VIDEOS[2], from: DAYS[1], to: DAYS[1] });
    expect(both.lines.length).toBe(PER_DAY / 3);
    expect(both.lines.every((l) => l.subject === SUBJECTS[2] && l.videoId === VIDEOS[2] && l.file === 'access-2026-03-02.log')).toBe(true);
    expect((await auditReport(dir, TEST_AUDIT_KEY, { subjects: [SUBJECTS[2]!], videoId: VIDEOS[0] })).lines).toEqual([]);
  });

  it('reports a changed line as a break with the lines it withholds, even where an index says otherwise', async () => {
    const dir = copy();
    await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[0] }, { buildIndex: true });
    const file = path.join(dir, 'access-2026-03-02.log');
    const lines = readFileSync(file, 'utf8').split('\n');
    const target = lines.findIndex((l) => l.includes(VIDEOS[0]!) && l.includes('"granted"'));
    lines[target] = lines[target]!.replace('"granted"', '"denied"');
    writeFileSync(file, lines.join('\n'));

    const report = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[0] });
    expect(report.breaks).toHaveLength(1);
    expect(report.breaks[0]).toMatchObject({ day: '2026-03-02', category: 'access', file: 'access-2026-03-02.log', line: target + 1, kind: 'modified' });
    expect(report.breaks[0]!.withheld).toBeGreaterThan(0);
    expect(report.lines.some((l) => l.file === 'access-2026-03-02.log' && l.line >= target + 1)).toBe(false);
    expect(report.lines.filter((l) => l.file === 'access-2026-03-01.log').length).toBeGreaterThan(0);
    // The lines before the break are facts; so are the other days, still read through their index.
    expect(report.lines.some((l) => l.file === 'access-2026-03-02.log' && l.line < target + 1)).toBe(true);
    expect(report.indexed).toBe(2);
  });

  it('reports a deleted day inside the range as a missing day', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, 'access-2026-03-02.log'));
    const report = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[2] });
    expect(report.breaks.map((b) => [b.file, b.kind])).toEqual(
      expect.arrayContaining([
        ['access-2026-03-02.log', 'missing day'],
        ['access-2026-03-03.log', 'missing day'],
      ]),
    );
  });

  it('ignores a forged or a stale index: it only costs a verification', async () => {
    const dir = copy();
    const truth = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[2] }, { buildIndex: true });
    // Forged: one posting byte changed (the signature no longer holds).
    const idx = indexPath(dir, 'access-2026-03-01.log');
    const bytes = readFileSync(idx);
    bytes[bytes.length - 40] = bytes[bytes.length - 40]! ^ 0xff;
    writeFileSync(idx, bytes);
    // Stale: another day's index where this one's should be.
    cpSync(indexPath(dir, 'access-2026-03-03.log'), indexPath(dir, 'access-2026-03-02.log'));
    const report = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[2] });
    expect(report.indexed).toBe(1);
    expect(report.lines).toEqual(truth.lines);
    expect(report.breaks).toEqual([]);
  });

  it('walks lines appended after the index from its last link', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-audit-report-tail-'));
    scratch.push(dir);
    // One open day of 90 entries; first only its first 60 were written and checkpointed, and indexed.
    await writeAuditVolume(dir, TEST_AUDIT_KEY, { firstDay: DAYS[0]!, days: 1, perDay: 90, videos: VIDEOS, subjects: SUBJECTS });
    const name = 'access-2026-03-01.log';
    const full = readFileSync(path.join(dir, name), 'utf8');
    const fullCheckpoint = readFileSync(checkpointPath(dir, name));
    const first60 = full.split('\n').slice(0, 60);
    writeFileSync(path.join(dir, name), `${first60.join('\n')}\n`);
    const at60 = JSON.parse(first60[59]!) as { seq: number; hash: string };
    const cp = JSON.parse(fullCheckpoint.toString()) as Parameters<typeof signCheckpoint>[1] & { mac?: string };
    delete cp.mac;
    await writeCheckpoint(dir, signCheckpoint(TEST_AUDIT_KEY, { ...cp, seq: at60.seq, hash: at60.hash, count: 60 }));
    const before = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[0] }, { buildIndex: true });
    // The writer appends 30 more and checkpoints them.
    writeFileSync(path.join(dir, name), full);
    writeFileSync(checkpointPath(dir, name), fullCheckpoint);
    const after = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[0] });
    expect(after.indexed).toBe(1);
    expect(after.breaks).toEqual([]);
    expect(after.lines.slice(0, before.lines.length)).toEqual(before.lines);
    expect(seqs(after)).toEqual(allEntriesOf(dir).filter((e) => e.videoId === VIDEOS[0]).map((e) => e.seq));
    // A tail that does not chain from the index's last link is not believed: the file is verified, and the break named.
    writeFileSync(path.join(dir, name), full.replace(/"granted"(?![\s\S]*"granted")/, '"denied"'));
    const tampered = await auditReport(dir, TEST_AUDIT_KEY, { videoId: VIDEOS[0] });
    expect(tampered.indexed).toBe(0);
    expect(tampered.breaks.map((b) => b.kind)).toContain('modified');
  });
});

function allEntriesOf(dir: string): { seq: number; videoId: string }[] {
  return readFileSync(path.join(dir, 'access-2026-03-01.log'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

describe('pulsevault audit report / reindex / export', () => {
  const env = (dir: string) => ({ ...process.env, AUDIT_DIR: dir, MEDIA_ROOT: dir, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, HMAC_SECRET: TEST_HMAC_SECRET, LOG_LEVEL: 'error' });
  const cli = (dir: string, ...args: string[]) =>
    run(process.execPath, ['dist/scripts/pulsevault.js', 'audit', ...args], { env: env(dir), maxBuffer: 64 * 1024 * 1024 }).catch(
      (err: { code: number; stdout: string; stderr: string }) => err,
    );

  it('reports a raw subject by its pseudonym in JSON, CSV and a table; reindex writes every index', async () => {
    const dir = copy();
    const reindex = await cli(dir, 'reindex');
    expect(reindex.stdout).toContain(`indexed ${DAYS.length} file(s)`);
    for (const day of DAYS) expect(existsSync(indexPath(dir, `access-${day}.log`))).toBe(true);

    const json = await cli(dir, 'report', '--subject', RAW_SUBJECTS[0]!, '--format', 'json');
    const parsed = JSON.parse(json.stdout) as AuditReport;
    expect(parsed.lines.length).toBe(allEntries(dir).filter((e) => e.actor.userId === SUBJECTS[0]).length);
    expect(parsed.lines.every((l) => l.subject === SUBJECTS[0])).toBe(true);
    expect(json.stdout).not.toContain('josé');

    const csv = await cli(dir, 'report', '--video', VIDEOS[0]!, '--from', DAYS[2]!, '--category', 'access', '--format', 'csv');
    const rows = csv.stdout.trim().split('\r\n');
    expect(rows[0]).toBe('record,time,category,action,outcome,reason,subject,role,video_id,resource,client_ip,request_id,seq,file,line,detail');
    expect(rows.slice(1).every((r) => r.startsWith('entry,2026-03-03T') && r.includes(VIDEOS[0]!))).toBe(true);
    expect(rows.length - 1).toBe(allEntries(dir).filter((e) => e.videoId === VIDEOS[0] && e.seq > 2 * PER_DAY).length);

    const table = await cli(dir, 'report', '--video', VIDEOS[0]!, '--from', DAYS[2]!);
    expect(table.stdout).toMatch(/^time\s+category\s+action/);
    expect(table.stdout).toContain('chain verified');

    const usage = await cli(dir, 'report', '--format', 'xml');
    expect((usage as { code: number }).code).toBe(64);
    expect(usage.stderr).toContain('--video or --subject');
  });

  it('reindex on an audit dir it may not write fails with exit 73 and one line naming the fix, writing nothing', async () => {
    const dir = copy();
    await cli(dir, 'reindex');
    const before = readFileSync(indexPath(dir, `access-${DAYS[0]}.log`));
    // As root, permissions do not bind: run as an unprivileged user, as the pod runs; the dir as a read-only mount leaves it.
    chmodSync(path.dirname(dir), 0o755);
    for (const d of [path.join(dir, 'index'), dir]) chmodSync(d, 0o555);
    try {
      const result = await run(process.execPath, [path.resolve('dist/scripts/pulsevault.js'), 'audit', 'reindex'], { env: env(dir), uid: 65534, gid: 65534 }).catch((err: { code: number; stdout: string; stderr: string }) => err);
      expect((result as { code: number }).code).toBe(73);
      expect(result.stdout).not.toContain('indexed');
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(/^pulsevault audit: cannot write the report index in .*\(EACCES\); reindex needs AUDIT_DIR writable/);
    } finally {
      for (const d of [dir, path.join(dir, 'index')]) chmodSync(d, 0o755);
    }
    expect(readFileSync(indexPath(dir, `access-${DAYS[0]}.log`))).toEqual(before);
  });

  it('exits 1 and prints the break when the range holds one', async () => {
    const dir = copy();
    const file = path.join(dir, 'access-2026-03-01.log');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"granted"', '"denied"'));
    const result = await cli(dir, 'report', '--video', VIDEOS[0]!, '--format', 'csv');
    expect((result as { code: number }).code).toBe(1);
    expect(result.stdout).toMatch(/^break,,access,,,,,,,,,,,access-2026-03-01\.log,2,modified: /m);
  });

  it('exports ECS JSON lines, resumable from the cursor it prints, without PHI', async () => {
    const dir = copy();
    const first = await cli(dir, 'export', '--limit', '400');
    const lines = first.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(400);
    expect(lines[0]).toMatchObject({ ecs: { version: '8.11.0' }, event: { kind: 'event', action: 'stream', dataset: 'pulsevault.audit' }, user: { id: SUBJECTS[0] } });
    const cursor = /^cursor (\S+)$/m.exec(first.stderr)![1]!;
    expect(lines[399].pulsevault.cursor).toBe(cursor);
    const rest = await cli(dir, 'export', '--since', cursor);
    const more = rest.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect([...lines, ...more].map((l) => l.pulsevault.seq)).toEqual(Array.from({ length: DAYS.length * PER_DAY }, (_, i) => i + 1));
    const none = await cli(dir, 'export', '--since', /^cursor (\S+)$/m.exec(rest.stderr)![1]!);
    expect(none.stdout).toBe('');
    const bad = await cli(dir, 'export', '--since', 'nonsense');
    expect((bad as { code: number }).code).toBe(64);
    const exportDir = mkdtempSync(path.join(tmpdir(), 'pv-audit-export-'));
    scratch.push(exportDir);
    writeFileSync(path.join(exportDir, 'export.jsonl'), first.stdout + rest.stdout);
    expect(findPhi({ auditDir: exportDir, output: '' }, RAW_SUBJECTS).findings).toEqual([]);
  });

  it("exports an entry's resource as the media URL path it disclosed (ECS url.path)", () => {
    const entry = JSON.parse(readFileSync(path.join(copy(), 'access-2026-03-01.log'), 'utf8').split('\n')[0]!) as AuditEntry;
    const withResource = toEcs({ ...entry, resource: 'hls/720p/seg_003.m4s' }, 'cursor');
    expect(withResource).toMatchObject({ url: { path: `/media/videos/${entry.videoId}/hls/720p/seg_003.m4s` }, pulsevault: { resource: 'hls/720p/seg_003.m4s' } });
    expect(toEcs(entry, 'cursor').url).toBeUndefined();
  });
});
