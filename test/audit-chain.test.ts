/**
 * The audit chain and its verifier. A real writer (in this process, its clock
 * moved across midnight) fed by real record() calls over a real redis-server
 * writes three days of files; each test copies them and breaks them the way an
 * attacker or a crash would, and the verifier must name file, line and kind.
 */
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import canonicalize from 'canonicalize';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { anchorKey, readAnchors } from '../shared/audit/anchor.js';
import { AuditEventError, createAuditLog, toSubmittedEvent, type AuditLog } from '../shared/audit/client.js';
import { checkpointPath, readCheckpoint, signCheckpoint, writeCheckpoint } from '../shared/audit/checkpoint.js';
import { auditEntrySchema, canonicalEntry, chainEntry, compareStreamIds, entryMacKey, hashEntry, hasValidMac, parseSubmittedEvent, type AuditEntry } from '../shared/audit/entry.js';
import { anonymizeIp } from '../shared/audit/ip.js';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { forEachLine, parseEntryLine } from '../shared/audit/files.js';
import { verifyAuditLog, type BreakKind } from '../shared/audit/verify.js';
import { AuditWriter } from '../shared/audit/writer.js';
import { loadConfig } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/stack.js';

const run = promisify(execFile);
const VIDEO = '0b7c6a52-9d7e-4c1e-8f3a-5d2b9e1c4a10';
const A1 = 'access-2026-03-01.log';
const A2 = 'access-2026-03-02.log';
const A4 = 'access-2026-03-04.log'; // 03-03 had no events: the chain links 02 to 04
const U1 = 'upload-2026-03-01.log';
const OLD_ENTRY_LINE =
  '{"action":"stream","actor":{"role":"clinician","userId":"sub-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"category":"access","clientIp":"198.51.100.0","occurredAt":"2025-11-02T09:15:00.000Z","outcome":"granted","prevHash":"0000000000000000000000000000000000000000000000000000000000000000","reason":null,"requestId":"req-1","seq":1,"streamId":"1762074900000-0","ts":"2025-11-02T09:15:00.001Z","videoId":"0b7c6a52-9d7e-4c1e-8f3a-5d2b9e1c4a10","hash":"15605e2bfe24b38d0ce659415334b8be6a87ed9c6ce76486d79e194534d802ce"}';

let redis: TestRedis;
let pristine: string;
const scratch: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  pristine = mkdtempSync(path.join(tmpdir(), 'pv-audit-chain-'));
  const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, REDIS_URL: redis.url, AUDIT_DIR: pristine, MEDIA_ROOT: pristine }, { secretsDir: '/nonexistent' });
  const log = createLogger('audit-chain-test', 'error');
  let clock = Date.parse('2026-03-01T23:59:58.000Z');
  const connections = [new Redis(redis.url), new Redis(redis.url)] as const;
  const writer = new AuditWriter({ auditDir: pristine, signingKey: TEST_AUDIT_KEY, redis: connections[0], reader: connections[1], log, leaseMs: 5_000, now: () => clock });
  void writer.start();
  const producer = new Redis(redis.url);
  const audit: AuditLog = createAuditLog(config, producer, log);
  const record = (category: 'access' | 'upload', n: number, resource?: string) =>
    audit.record({ ...(category === 'access' ? { category, action: 'stream' } : { category, action: 'finalize' }), outcome: 'granted', videoId: VIDEO, clientIp: '198.51.100.23', requestId: `req-${category}-${n}`, actor: { userId: 'u-42', role: 'clinician' }, resource });
  let n = 0;
  for (let i = 0; i < 5; i++) await record('access', ++n);
  for (let i = 0; i < 3; i++) await record('upload', ++n);
  clock = Date.parse('2026-03-02T08:00:00.000Z');
  for (let i = 0; i < 5; i++) await record('access', ++n);
  // Entries with a resource chained after entries without one (as written before the field existed).
  clock = Date.parse('2026-03-04T08:00:00.000Z');
  for (let i = 0; i < 5; i++) await record('access', ++n, `hls/720p/seg_00${i}.m4s`);
  await audit.close();
  await writer.stop();
  for (const c of [producer, ...connections]) c.disconnect();
});

afterAll(async () => {
  await redis?.close();
  for (const dir of [pristine, ...scratch]) if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A copy of the pristine log to break. */
function copy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-audit-mut-'));
  scratch.push(dir);
  cpSync(pristine, dir, { recursive: true });
  return dir;
}

const readLines = (dir: string, file: string) => readFileSync(path.join(dir, file), 'utf8').split('\n').slice(0, -1);
const writeLines = (dir: string, file: string, lines: string[]) => writeFileSync(path.join(dir, file), `${lines.join('\n')}\n`);

async function breaksOf(dir: string, key = TEST_AUDIT_KEY) {
  return (await verifyAuditLog(dir, key)).breaks.map(({ file, line, kind }) => ({ file, line, kind }));
}

function expectBreak(breaks: { file: string; line: number | null; kind: BreakKind }[], file: string, line: number | null, kind: BreakKind) {
  expect(breaks).toContainEqual({ file, line, kind });
}

describe('writer output', () => {
  it('chains every category across days, a day without events included, with signed checkpoints', async () => {
    const a1 = readLines(pristine, A1).map((l) => JSON.parse(l) as AuditEntry);
    const a2 = readLines(pristine, A2).map((l) => JSON.parse(l) as AuditEntry);
    const a4 = readLines(pristine, A4).map((l) => JSON.parse(l) as AuditEntry);
    const u1 = readLines(pristine, U1).map((l) => JSON.parse(l) as AuditEntry);
    expect(a1.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(u1.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(a2[0]!.prevHash).toBe(a1[4]!.hash);
    expect(a4[0]!.prevHash).toBe(a2[4]!.hash);
    expect(a4[0]!.seq).toBe(11);
    for (const e of [...a1, ...a2, ...a4, ...u1]) {
      const { hash, ...rest } = e;
      expect(hashEntry(rest)).toBe(hash);
      expect(e.clientIp).toBe('198.51.100.0');
    }
    const closed = JSON.parse(readFileSync(checkpointPath(pristine, A2), 'utf8'));
    expect(closed).toMatchObject({ file: A2, seq: 10, count: 5, firstSeq: 6, final: true });
    const open = JSON.parse(readFileSync(checkpointPath(pristine, A4), 'utf8'));
    expect(open).toMatchObject({ seq: 15, final: false });

    const report = await verifyAuditLog(pristine, TEST_AUDIT_KEY);
    expect(report.breaks).toEqual([]);
    expect(report.files.map((f) => [f.file, f.entries, f.ok])).toEqual([
      [A1, 5, true],
      [A2, 5, true],
      [A4, 5, true],
      [U1, 3, true],
    ]);
  });

  it('verifies a date range and a category on their own, anchored by the checkpoint', async () => {
    const report = await verifyAuditLog(pristine, TEST_AUDIT_KEY, { from: '2026-03-02', category: 'access' });
    expect(report.breaks).toEqual([]);
    expect(report.files.map((f) => f.file)).toEqual([A2, A4]);
  });
});

describe('verifier names each kind of break', () => {
  it('modified: a field edited in place', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    lines[1] = lines[1]!.replace('"outcome":"granted"', '"outcome":"denied"');
    writeLines(dir, A2, lines);
    expectBreak(await breaksOf(dir), A2, 2, 'modified');
  });

  it('modified: an entry rewritten with a recomputed hash', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    const { hash: _old, ...entry } = JSON.parse(lines[1]!) as AuditEntry;
    const forged = { ...entry, actor: { userId: 'someone-else', role: 'admin' } };
    lines[1] = JSON.stringify({ ...forged, hash: hashEntry(forged) });
    writeLines(dir, A2, lines);
    expectBreak(await breaksOf(dir), A2, 2, 'modified');
  });

  it('deleted: a line removed from the middle', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    lines.splice(2, 1);
    writeLines(dir, A2, lines);
    expectBreak(await breaksOf(dir), A2, 3, 'deleted');
  });

  it('inserted: a copied line', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    lines.splice(4, 0, lines[1]!);
    writeLines(dir, A2, lines);
    expectBreak(await breaksOf(dir), A2, 5, 'inserted');
  });

  it('inserted: lines appended to a closed day', async () => {
    const dir = copy();
    const lines = readLines(dir, A1);
    const { hash: _h, ...last } = JSON.parse(lines[4]!) as AuditEntry;
    const next = { ...last, seq: 6, prevHash: JSON.parse(lines[4]!).hash, requestId: 'forged' };
    writeLines(dir, A1, [...lines, JSON.stringify({ ...next, hash: hashEntry(next) })]);
    expectBreak(await breaksOf(dir), A1, 6, 'inserted');
  });

  it('reordered: two lines swapped', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    [lines[1], lines[2]] = [lines[2]!, lines[1]!];
    writeLines(dir, A2, lines);
    const breaks = await breaksOf(dir);
    expectBreak(breaks, A2, 2, 'reordered');
    expect(breaks.every((b) => b.kind === 'reordered')).toBe(true);
  });

  it('reordered: a line moved far down, and a later copy of it is a second entry', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    const [moved] = lines.splice(1, 1);
    writeLines(dir, A2, [...lines, moved!, moved!]);
    const report = await verifyAuditLog(dir, TEST_AUDIT_KEY);
    expect(report.breaks.map(({ line, kind, detail }) => ({ line, kind, detail }))).toEqual([
      { line: 2, kind: 'reordered', detail: 'seq 8 comes before seq 7' },
      { line: 6, kind: 'inserted', detail: 'second entry for seq 7 (first at line 5)' },
    ]);
  });

  it('inserted: a forged entry spliced in, the original chain continuing after it', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    const { hash: _h, ...original } = JSON.parse(lines[2]!) as AuditEntry;
    const forged = { ...original, outcome: 'denied' as const };
    lines.splice(2, 0, JSON.stringify({ ...forged, hash: hashEntry(forged) }));
    writeLines(dir, A2, lines);
    const breaks = (await verifyAuditLog(dir, TEST_AUDIT_KEY)).breaks.filter((b) => b.file === A2);
    expect(breaks).toContainEqual({ file: A2, line: 3, kind: 'inserted', detail: 'forged entry for seq 8 (the chain continues from line 4)' });
  });

  it('unsealed: a correctly chained entry appended after the newest checkpoint of the newest file', async () => {
    const dir = copy();
    const lines = readLines(dir, A4);
    const last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const { hash: _h, mac: _m, ...event } = last;
    const forged = { ...event, seq: last.seq + 1, prevHash: last.hash, requestId: 'forged' };
    const forgedHash = hashEntry(forged);
    writeLines(dir, A4, [...lines, JSON.stringify({ ...forged, hash: forgedHash })]);
    expect(await breaksOf(dir)).toEqual([{ file: A4, line: 6, kind: 'unsealed' }]);
    // A MAC copied from a genuine entry does not fit the forged one.
    writeLines(dir, A4, [...lines, JSON.stringify({ ...forged, hash: forgedHash, mac: last.mac })]);
    expect(await breaksOf(dir)).toEqual([{ file: A4, line: 6, kind: 'unsealed' }]);
  });

  it('unsealed: entries past the checkpoint verify by their MACs, a forged one after them does not', async () => {
    const dir = copy();
    // As between two checkpoints: the signed head two entries behind the file's (re-signed here with the test's key).
    const cp = await readCheckpoint(dir, A4, TEST_AUDIT_KEY);
    if (cp.state !== 'valid') throw new Error(`the pristine checkpoint of ${A4} is ${cp.state}`);
    const { mac: _mac, ...body } = cp.checkpoint;
    const lines = readLines(dir, A4);
    const atThree = JSON.parse(lines[2]!) as AuditEntry;
    await writeCheckpoint(dir, signCheckpoint(TEST_AUDIT_KEY, { ...body, seq: atThree.seq, hash: atThree.hash, count: 3 }));
    expect(await breaksOf(dir)).toEqual([]);
    const last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const { hash: _h, mac: _m, ...event } = last;
    const forged = { ...event, seq: last.seq + 1, prevHash: last.hash, requestId: 'forged' };
    writeLines(dir, A4, [...lines, JSON.stringify({ ...forged, hash: hashEntry(forged) })]);
    expect(await breaksOf(dir)).toEqual([{ file: A4, line: 6, kind: 'unsealed' }]);
  });

  it('truncated: the tail of the newest file cut off', async () => {
    const dir = copy();
    writeLines(dir, A4, readLines(dir, A4).slice(0, 3));
    expectBreak(await breaksOf(dir), A4, 4, 'truncated');
  });

  it('truncated: the tail of a closed day cut off (and not also blamed on the next day)', async () => {
    const dir = copy();
    writeLines(dir, A1, readLines(dir, A1).slice(0, 4));
    const breaks = await breaksOf(dir);
    expect(breaks).toEqual([{ file: A1, line: 5, kind: 'truncated' }]);
  });

  it('truncated: a torn last line', async () => {
    const dir = copy();
    const text = readFileSync(path.join(dir, A4), 'utf8');
    writeFileSync(path.join(dir, A4), `${text}{"seq":16,"ts":"2026-03-`);
    expectBreak(await breaksOf(dir), A4, 6, 'truncated');
  });

  it('missing day: a day in the middle deleted with its checkpoint', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, A2));
    unlinkSync(checkpointPath(dir, A2));
    expectBreak(await breaksOf(dir), A4, 1, 'missing day');
  });

  it('missing day: the newest day deleted with its checkpoint', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, A4));
    unlinkSync(checkpointPath(dir, A4));
    expectBreak(await breaksOf(dir), A2, null, 'missing day');
  });

  it('missing day: a log file deleted, its checkpoint left', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, A4));
    expectBreak(await breaksOf(dir), A4, null, 'missing day');
  });

  it('missing day: the first day deleted with its checkpoint', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, A1));
    unlinkSync(checkpointPath(dir, A1));
    expectBreak(await breaksOf(dir), A2, 1, 'missing day');
  });

  it('bad checkpoint: edited, missing, or signed with another key', async () => {
    const edited = copy();
    const cp = JSON.parse(readFileSync(checkpointPath(edited, A2), 'utf8'));
    writeFileSync(checkpointPath(edited, A2), JSON.stringify({ ...cp, seq: 9 }));
    expectBreak(await breaksOf(edited), A2, null, 'bad checkpoint');

    const missing = copy();
    unlinkSync(checkpointPath(missing, A1));
    expectBreak(await breaksOf(missing), A1, null, 'bad checkpoint');

    const otherKey = await breaksOf(pristine, 'another-signing-key-0123456789abcdef0123');
    expect(otherKey.filter((b) => b.kind === 'bad checkpoint').map((b) => b.file).sort()).toEqual([A1, A2, A4, 'checkpoints/manifest.json', U1]);
  });

  it('the CLI prints file, line and kind and exits non-zero on a break, zero when intact', async () => {
    const dir = copy();
    const lines = readLines(dir, A2);
    lines.splice(2, 1);
    writeLines(dir, A2, lines);
    const env = { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, SECRETS_DIR: '/nonexistent' };
    const ok = await run(process.execPath, ['dist/scripts/pulsevault.js', 'audit', 'verify'], { env: { ...env, AUDIT_DIR: pristine } });
    expect(ok.stdout).toContain(`ok   ${A2}  5 entries, seq 6..10, checkpoint seq 10 (closed)`);
    expect(ok.stdout).toContain('note: no Redis configured, or it does not answer: no anchor checked');
    const failed = await run(process.execPath, ['dist/scripts/pulsevault.js', 'audit', 'verify', '--category', 'access'], { env: { ...env, AUDIT_DIR: dir } }).catch((err: { code: number; stdout: string }) => err);
    expect('code' in failed && failed.code).toBe(1);
    expect(failed.stdout).toContain(`BREAK ${A2}:3 deleted: seq 8..8 missing before this line`);
    expect(failed.stdout).toContain(`FAIL ${A2}`);
    const usage = await run(process.execPath, ['dist/scripts/pulsevault.js', 'audit', 'verify', '--from', 'yesterday'], { env: { ...env, AUDIT_DIR: dir } }).catch((err: { code: number; stderr: string }) => err);
    expect('code' in usage && usage.code).toBe(64);
  });
});

describe('entries carry no PHI and no raw IP', () => {
  it('anonymises IPv4 to /24, IPv6 to /48, IPv4-mapped IPv6 as IPv4', () => {
    expect(anonymizeIp('203.0.113.77')).toBe('203.0.113.0');
    expect(anonymizeIp('::ffff:203.0.113.77')).toBe('203.0.113.0');
    expect(anonymizeIp('2001:db8:abcd:1234:5678::1')).toBe('2001:db8:abcd::');
    expect(anonymizeIp('2001:0db8:00ab:ffff::')).toBe('2001:db8:ab::');
    expect(anonymizeIp('fe80::1%eth0')).toBe('fe80::');
    expect(anonymizeIp('10.1')).toBeNull();
    expect(anonymizeIp('not-an-ip')).toBeNull();
    expect(anonymizeIp('')).toBeNull();
    // Remembered answers are the same answers, refusals included.
    expect(anonymizeIp('203.0.113.77')).toBe('203.0.113.0');
    expect(anonymizeIp('not-an-ip')).toBeNull();
  });

  it('refuses free text where an id belongs', () => {
    const base = { category: 'access', action: 'stream', outcome: 'granted' } as const;
    expect(() => toSubmittedEvent({ ...base, videoId: 'Knee MRI of Jane Doe' })).toThrow(AuditEventError);
    expect(() => toSubmittedEvent({ ...base, videoId: 'jane-doe-knee.mp4' })).toThrow(AuditEventError);
    // @ts-expect-error an action outside shared/audit/actions.ts does not compile
    expect(() => toSubmittedEvent({ ...base, action: 'watched Jane Doe' })).toThrow(AuditEventError);
    // @ts-expect-error nor does one of another category
    expect(() => toSubmittedEvent({ ...base, action: 'transcode.start' })).toThrow(AuditEventError);
    expect(() => toSubmittedEvent({ ...base, actor: { userId: 'Jane Doe', role: 'patient' } })).toThrow(AuditEventError);
    expect(toSubmittedEvent({ ...base, videoId: VIDEO, clientIp: '192.0.2.9' })).toMatchObject({ videoId: VIDEO, clientIp: '192.0.2.0', reason: null, actor: null });
  });

  it('the writer refuses, field by field, what a peer submits that record() would never build', () => {
    const valid = toSubmittedEvent({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, clientIp: '192.0.2.9', requestId: 'r-1', actor: null });
    expect(parseSubmittedEvent(JSON.stringify(valid))).toEqual(valid);
    const pseudonymous = { ...valid, actor: { userId: `sub-${'a'.repeat(32)}`, role: 'viewer' } };
    expect(parseSubmittedEvent(JSON.stringify(pseudonymous))).toEqual(pseudonymous);
    for (const hostile of [
      { clientIp: 'Jane Doe DOB 1970-01-01 MRN 0012345' },
      { clientIp: '192.0.2.9' }, // not anonymised
      { clientIp: '2001:db8:1:2::7' },
      { clientIp: '' },
      { action: 'watched Jane Doe' },
      { action: 'transcode.start' }, // another category's
      { action: 'toString' },
      { category: 'admin' },
      { actor: { userId: 'Jane Doe', role: 'viewer' } },
      { actor: { userId: 'admin', role: 'admin' } }, // not a pseudonym
      { actor: { userId: `sub-${'a'.repeat(32)}`, role: 'Chief Surgeon' } },
      { reason: 'Jane Doe asked' },
      { requestId: 'x'.repeat(129) },
      { videoId: 'knee.mp4' },
      { outcome: 'maybe' },
      { occurredAt: 'yesterday' },
      { extra: 'field' },
      { resource: '../../etc/passwd' },
      { resource: 'hls/./720p.m3u8' },
      { resource: '/hls/720p.m3u8' },
      { resource: 'Jane Doe knee.mp4' },
      { resource: `hls/${'a'.repeat(200)}` },
      { resource: '' },
      { resource: null },
    ]) expect(parseSubmittedEvent(JSON.stringify({ ...valid, ...hostile })), JSON.stringify(hostile)).toBeNull();
    expect(parseSubmittedEvent(JSON.stringify({ ...valid, clientIp: '2001:db8:1::' }))).not.toBeNull();
    for (const resource of ['hls/720p/seg_003.m4s', 'original.mp4', 'hls/', 'metadata']) expect(parseSubmittedEvent(JSON.stringify({ ...valid, resource })), resource).not.toBeNull();
  });

  it('hashes the canonical form: key order does not matter, content does', () => {
    const entry = JSON.parse(readLines(pristine, A1)[0]!) as AuditEntry;
    const { hash, ...rest } = entry;
    const reordered = Object.fromEntries(Object.entries(rest).reverse()) as typeof rest;
    expect(hashEntry(reordered)).toBe(hash);
    expect(hashEntry({ ...rest, seq: rest.seq + 1 })).not.toBe(hash);
  });

  it('writes the entry as canonicalize (RFC 8785) does, every field included', () => {
    const { hash: _hash, mac: _mac, ...rest } = JSON.parse(readLines(pristine, A4)[0]!) as AuditEntry;
    expect(rest.resource).toBe('hls/720p/seg_000.m4s');
    const { resource: _resource, ...withoutResource } = rest;
    for (const entry of [rest, withoutResource, { ...rest, actor: null, reason: 'token_expired', clientIp: null }]) expect(canonicalEntry(entry, entry)).toBe(canonicalize(entry));
    const fields = Object.keys(auditEntrySchema.shape).filter((k) => k !== 'hash' && k !== 'mac');
    expect(Object.keys(JSON.parse(canonicalEntry(rest, rest)) as object).sort()).toEqual(fields.sort());
    expect(JSON.parse(readLines(pristine, A1)[0]!)).not.toHaveProperty('resource');
  });

  it('still verifies a line written before `resource` existed, and the chain mixing both forms', async () => {
    // Written by the writer as it was before the field (its hash from then, not recomputed).
    const old = parseEntryLine(OLD_ENTRY_LINE);
    expect(old).toMatchObject({ entry: { seq: 1, videoId: VIDEO } });
    expect(parseEntryLine(OLD_ENTRY_LINE.replace('"req-1"', '"req-2"'))).toEqual({ error: 'hash does not match its content' });
    expect((await verifyAuditLog(pristine, TEST_AUDIT_KEY)).breaks).toEqual([]);
  });

  it('orders stream ids numerically', () => {
    expect(compareStreamIds('10-0', '9-99')).toBeGreaterThan(0);
    expect(compareStreamIds('1700000000000-10', '1700000000000-9')).toBeGreaterThan(0);
    expect(compareStreamIds('1700000000000-0', '1700000000001-0')).toBeLessThan(0);
    expect(compareStreamIds('1700000000000-3', '1700000000000-3')).toBe(0);
    expect(compareStreamIds('0-0', '0-1')).toBeLessThan(0);
    // The events of one entry, in order, between the entries before and after it.
    expect(compareStreamIds('1700000000000-3.2', '1700000000000-3.10')).toBeLessThan(0);
    expect(compareStreamIds('1700000000000-3.0', '1700000000000-2')).toBeGreaterThan(0);
    expect(compareStreamIds('1700000000000-3.9', '1700000000000-4')).toBeLessThan(0);
    expect(compareStreamIds('1700000000000-3.4', '1700000000000-3.4')).toBe(0);
  });

  it('keys the subject pseudonym with HMAC_SECRET as the documented openssl command does', () => {
    const expected = createHmac('sha256', TEST_HMAC_SECRET).update('pulsevault-subject:jane@example.org').digest('hex').slice(0, 32);
    expect(subjectPseudonym(TEST_HMAC_SECRET, 'jane@example.org')).toBe(`sub-${expected}`);
    expect(subjectPseudonym('another-secret', 'jane@example.org')).not.toBe(`sub-${expected}`);
    // Remembered per secret: back on the first secret, the same pseudonym again (not the other secret's).
    expect(subjectPseudonym(TEST_HMAC_SECRET, 'jane@example.org')).toBe(`sub-${expected}`);
    expect(subjectPseudonym(TEST_HMAC_SECRET, 'jane@example.org')).toBe(`sub-${expected}`);
  });
});

describe('a long day', () => {
  it('verifies a file of 150,000 entries (a busy day is longer than any argument list)', async () => {
    const dir = copy();
    const lines = readLines(dir, A4);
    let last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const { seq: _seq, ts: _ts, streamId: _streamId, prevHash: _prevHash, hash: _hash, ...event } = last;
    for (let i = 1; i <= 150_000; i++) {
      const link = { seq: last.seq + 1, ts: last.ts, streamId: `9999999999999-${i}`, prevHash: last.hash };
      const { hash, line } = chainEntry(event, link);
      lines.push(line);
      last = { ...event, ...link, hash };
    }
    writeLines(dir, A4, lines);
    const cp = await readCheckpoint(dir, A4, TEST_AUDIT_KEY);
    if (cp.state !== 'valid') throw new Error(`the pristine checkpoint of ${A4} is ${cp.state}`);
    const { mac: _mac, ...body } = cp.checkpoint;
    await writeCheckpoint(dir, signCheckpoint(TEST_AUDIT_KEY, { ...body, seq: last.seq, hash: last.hash, count: last.seq - body.firstSeq + 1 }));
    expect(await breaksOf(dir)).toEqual([]);
  });
});

describe('reading a log file', () => {
  it('splits lines across chunk boundaries, multi-byte characters included, and returns the torn tail', async () => {
    const dir = copy();
    const file = path.join(dir, 'lines.txt');
    const text = 'first\nsecond ünïcødé line\n\n{"x":"€€€"}\r\nlast without newline';
    writeFileSync(file, text);
    const expected = text.split('\n');
    const torn = expected.pop();
    for (const chunkBytes of [1, 2, 3, 7, 64]) {
      const seen: [string, number][] = [];
      const result = await forEachLine(file, (line, n) => seen.push([line, n]), chunkBytes);
      expect(seen).toEqual(expected.map((line, i) => [line, i + 1]));
      expect(result).toEqual({ lines: expected.length, torn });
    }
  });
});

describe('coverage: the signed manifest of files', () => {
  const manifest = (dir: string) => path.join(dir, 'checkpoints', 'manifest.json');

  it('lists every file the writer created', () => {
    expect(JSON.parse(readFileSync(manifest(pristine), 'utf8'))).toMatchObject({ v: 1, files: [A1, A2, A4, U1] });
  });

  it("names a category's only file deleted with its checkpoint", async () => {
    const dir = copy();
    unlinkSync(path.join(dir, U1));
    unlinkSync(checkpointPath(dir, U1));
    expect(await breaksOf(dir)).toEqual([{ file: U1, line: null, kind: 'missing day' }]);
  });

  it('names the newest day deleted with its checkpoint', async () => {
    const dir = copy();
    unlinkSync(path.join(dir, A4));
    unlinkSync(checkpointPath(dir, A4));
    expectBreak(await breaksOf(dir), A4, null, 'missing day');
  });

  it('names a deleted or re-written manifest', async () => {
    const gone = copy();
    unlinkSync(manifest(gone));
    expectBreak(await breaksOf(gone), 'checkpoints/manifest.json', null, 'bad checkpoint');
    const edited = copy();
    const m = JSON.parse(readFileSync(manifest(edited), 'utf8')) as { files: string[] };
    writeFileSync(manifest(edited), JSON.stringify({ ...m, files: m.files.filter((f) => f !== U1) }));
    expectBreak(await breaksOf(edited), 'checkpoints/manifest.json', null, 'bad checkpoint');
  });
});

describe('the tail and the whole volume: entry MACs and the anchor in Redis', () => {
  // A Redis of their own: the anchors of these volumes, not the pristine one's.
  let anchored: TestRedis;
  beforeAll(async () => {
    anchored = await startRedis();
  });
  afterAll(async () => {
    await anchored?.close();
  });
  // Each test is a deployment of its own: a fresh volume behind the last test's anchor would be a rollback.
  beforeEach(async () => {
    await anchored.client().flushall();
  });

  const fresh = () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-audit-anchor-'));
    scratch.push(dir);
    return dir;
  };
  /** Put `snapshot` back in place of `dir`, as someone with write access to the volume could. */
  const putBack = (snapshot: string, dir: string) => {
    rmSync(dir, { recursive: true });
    cpSync(snapshot, dir, { recursive: true });
  };
  const access = (requestId: string) => ({ category: 'access', action: 'stream', outcome: 'granted', videoId: VIDEO, clientIp: '198.51.100.23', requestId, actor: { userId: 'u-42', role: 'clinician' } }) as const;

  /** A real writer on `dir`, the entries recorded through it (concurrently when asked: batches of several), stopped. */
  async function runWriter(dir: string, requestIds: string[], concurrently = false): Promise<void> {
    const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, REDIS_URL: anchored.url, AUDIT_DIR: dir, MEDIA_ROOT: dir }, { secretsDir: '/nonexistent' });
    const log = createLogger('audit-anchor-test', 'silent');
    const connections = [new Redis(anchored.url), new Redis(anchored.url)] as const;
    const writer = new AuditWriter({ auditDir: dir, signingKey: TEST_AUDIT_KEY, redis: connections[0], reader: connections[1], log, leaseMs: 5_000 });
    void writer.start();
    const producer = new Redis(anchored.url);
    const audit = createAuditLog(config, producer, log);
    if (concurrently) await Promise.all(requestIds.map((id) => audit.record(access(id))));
    else for (const id of requestIds) await audit.record(access(id));
    await audit.close();
    await writer.stop();
    for (const c of [producer, ...connections]) c.disconnect();
  }
  const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);
  const logOf = (dir: string) => readdirSync(dir).find((name) => name.endsWith('.log'))!;
  const verifyAnchored = async (dir: string) => {
    const client = anchored.client();
    return verifyAuditLog(dir, TEST_AUDIT_KEY, { anchors: await readAnchors(client) });
  };
  const breaksIn = (report: { breaks: { file: string; line: number | null; kind: BreakKind }[] }) => report.breaks.map(({ file, line, kind }) => ({ file, line, kind }));

  it('MACs the last entry of each batch, in the same write: the batch is vouched for once durable', async () => {
    const dir = fresh();
    await runWriter(dir, ids('batched', 40), true);
    const entries = readLines(dir, logOf(dir)).map((l) => JSON.parse(l) as AuditEntry);
    expect(entries).toHaveLength(40);
    // Several entries per batch, each batch's last one with the MAC; the file ends with one.
    expect(entries.filter((e) => e.mac).length).toBeLessThan(40);
    expect(entries.at(-1)!.mac).toMatch(/^[0-9a-f]{64}$/);
    const macKey = entryMacKey(TEST_AUDIT_KEY);
    for (const e of entries.filter((x) => x.mac)) expect(hasValidMac(macKey, e)).toBe(true);
    expect(hasValidMac(entryMacKey('another-signing-key-0123456789abcdef0123'), entries.at(-1)!)).toBe(false);
    const report = await verifyAnchored(dir);
    expect(report.breaks).toEqual([]);
    expect(report.notes).toEqual([]);
  });

  it('a writer restarted on a forged tail cuts it off rather than vouching for it', async () => {
    const dir = fresh();
    await runWriter(dir, ids('before', 3));
    const file = logOf(dir);
    const lines = readLines(dir, file);
    const last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const { hash: _h, mac: _m, ...event } = last;
    const forged = { ...event, seq: last.seq + 1, prevHash: last.hash, requestId: 'forged' };
    writeLines(dir, file, [...lines, JSON.stringify({ ...forged, hash: hashEntry(forged) })]);
    expect(breaksIn(await verifyAnchored(dir))).toEqual([{ file, line: 4, kind: 'unsealed' }]);

    await runWriter(dir, ['after']);
    const entries = readLines(dir, file).map((l) => JSON.parse(l) as AuditEntry);
    expect(entries.map((e) => [e.seq, e.requestId])).toEqual([
      [1, 'before-1'],
      [2, 'before-2'],
      [3, 'before-3'],
      [4, 'after'],
    ]);
    expect((await verifyAnchored(dir)).breaks).toEqual([]);
  });

  it('rolled back: the volume put back as it was at an older checkpoint, and a writer appending after it', async () => {
    const dir = fresh();
    await runWriter(dir, ids('first', 3));
    const snapshot = fresh();
    cpSync(dir, snapshot, { recursive: true });
    await runWriter(dir, ids('second', 3));
    const file = logOf(dir);
    expect(await readAnchors(anchored.client())).toEqual(new Map([['access', expect.objectContaining({ file, seq: 6, rolledBack: null })]]));

    putBack(snapshot, dir);
    // Every file, checkpoint and the manifest are validly signed: only the anchor shows it.
    expect(await breaksOf(dir)).toEqual([]);
    expect(breaksIn(await verifyAnchored(dir))).toEqual([{ file, line: null, kind: 'rolled back' }]);
    const env = { PATH: process.env.PATH, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, SECRETS_DIR: '/nonexistent', AUDIT_DIR: dir, REDIS_URL: anchored.url };
    const cli = await run(process.execPath, ['dist/scripts/pulsevault.js', 'audit', 'verify'], { env }).catch((err: { code: number; stdout: string }) => err);
    expect('code' in cli && cli.code).toBe(1);
    expect(cli.stdout).toContain(`BREAK ${file} rolled back: the chain ends at seq 3, before its anchor in Redis (seq 6 in ${file}`);

    // A writer on the older files marks the anchor; its chain growing past seq 6 does not move it on.
    await runWriter(dir, ids('third', 4));
    const anchor = (await readAnchors(anchored.client())).get('access')!;
    expect(anchor).toMatchObject({ seq: 6, rolledBack: { volumeSeq: 3 } });
    const report = await verifyAnchored(dir);
    expect(breaksIn(report)).toEqual([{ file, line: null, kind: 'rolled back' }]);
    expect(report.breaks[0]!.detail).toContain('found the files ending at seq 3');

    // Looked into, the mark deleted: the next checkpoint anchors the chain as it now is.
    await anchored.client().del(anchorKey('access'));
    await runWriter(dir, ['fourth']);
    expect((await verifyAnchored(dir)).breaks).toEqual([]);
  });

  it('rolled back: a different chain of the same length in place of the anchored one', async () => {
    const dir = fresh();
    await runWriter(dir, ids('kept', 2));
    const snapshot = fresh();
    cpSync(dir, snapshot, { recursive: true });
    await runWriter(dir, ['anchored']);
    // The older copy grown by an entry of its own, as a writer on it would have (signed with the key).
    const other = fresh();
    cpSync(snapshot, other, { recursive: true });
    const file = logOf(dir);
    const lines = readLines(other, file);
    const last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const { hash: _h, mac: _m, ...event } = last;
    const { hash, line } = chainEntry({ ...event, requestId: 'other' }, { seq: 3, ts: last.ts, streamId: last.streamId, prevHash: last.hash });
    writeLines(other, file, [...lines, line]);
    const cp = await readCheckpoint(other, file, TEST_AUDIT_KEY);
    if (cp.state !== 'valid') throw new Error(`the checkpoint of ${file} is ${cp.state}`);
    const { mac: _mac, ...body } = cp.checkpoint;
    await writeCheckpoint(other, signCheckpoint(TEST_AUDIT_KEY, { ...body, seq: 3, hash, count: 3 }));
    putBack(other, dir);
    expect(await breaksOf(dir)).toEqual([]);
    expect(breaksIn(await verifyAnchored(dir))).toEqual([{ file, line: 3, kind: 'rolled back' }]);
  });

  it('no anchor (Redis lost it): a note, not a break', async () => {
    const dir = fresh();
    await runWriter(dir, ids('unanchored', 2));
    const report = await verifyAuditLog(dir, TEST_AUDIT_KEY, { anchors: new Map() });
    expect(report.breaks).toEqual([]);
    expect(report.notes).toEqual([expect.stringContaining('no anchor for access in Redis')]);
  });
});
