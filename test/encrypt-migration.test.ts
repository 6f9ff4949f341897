/**
 * `pulsevault encrypt` (shared/crypto/migrate.ts) and `pulsevault keys rotate|status`, as an
 * operator runs them (real processes) against videos stored in the clear: the originals become
 * ciphertext and meta.json loses its PHI while the stream function answers every range read
 * identically throughout, a kill -9 at each step (and in the middle of a large original) is
 * finished by a rerun, deleted and transcoding videos are left alone; then a rotation to a new KEK,
 * resumed after an interruption, and the key counts `keys status` reports.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedFile } from '../shared/crypto/chunked.js';
import { ENCRYPT_STEPS } from '../shared/crypto/migrate.js';
import { ORIGINAL_ENCRYPTED_MARK } from '../shared/crypto/original-response.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { SecretKek } from '../shared/keys/kek.js';
import { deriveKey, VideoKeys } from '../shared/keys/video-keys.js';
import { DELETED_MARK } from '../shared/lifecycle/tombstone.js';
import { leaseKey } from '../shared/transcode/lease.js';
import { metaLockKey, MediaStore, type VideoMeta } from '../shared/video/store.js';
import { auditEntriesOnceThere, startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { baseTestEnv, spawnNode } from './helpers/node-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_HMAC_SECRET } from './helpers/secrets.js';
import { sha256 } from './helpers/uploads.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';
import { decryptRange } from './helpers/decrypt.js';

const kekSpec = (id: string) => `${id}:${randomBytes(32).toString('base64')}`;
const kekOf = (spec: string) => ({ id: spec.split(':')[0]!, key: Buffer.from(spec.split(':')[1]!, 'base64') });
const KEK1 = kekSpec('k1');
const KEK2 = kekSpec('k2');
const FILENAME = 'John-Roe-cardiac-echo.mp4';
const TITLE = 'Echo of John Roe';

let redis: TestRedis;
let auditWriter: { stop(): Promise<void> };
let stream: FunctionProcess;
let root: string;
let clipFile: string;
let clip: Buffer;
const mediaRoot = () => path.join(root, 'media');
const videoDir = () => path.join(mediaRoot(), 'videos');
const auditDir = () => path.join(mediaRoot(), 'audit');
const plainStore = () => new MediaStore(videoDir());
const keysWith = (current: string, previous: string[] = []) => new VideoKeys(path.join(mediaRoot(), 'keys'), new SecretKek(kekOf(current), previous.map(kekOf)));
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'pv-encrypt-'));
  redis = await startRedis();
  clipFile = await makeClip(path.join(root, 'clip.mp4'), { seconds: 1 });
  clip = readFileSync(clipFile);
  auditWriter = await startAuditWriter(redis.url, auditDir());
  stream = await startFunctionProcess('stream', { REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot(), MEDIA_KEK: KEK1 });
});

afterAll(async () => {
  await stream?.stop('SIGKILL');
  await auditWriter?.stop();
  await redis?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A video as finalize stored it before MEDIA_KEK was set: the original in the clear, PHI in meta.json. */
async function plaintextVideo(file: string, overrides: Partial<VideoMeta> = {}): Promise<{ videoId: string; bytes: Buffer }> {
  const bytes = readFileSync(file);
  const meta = await addVideo(plainStore(), file, { filename: FILENAME, metadata: { title: TITLE }, size: bytes.length, checksum: sha256(bytes), status: 'transcoded', ...overrides });
  return { videoId: meta.videoId, bytes };
}

function cli(args: string[], env: Record<string, string> = {}, script = 'dist/scripts/pulsevault.js') {
  const p = spawnNode([script, ...args], { ...baseTestEnv(), LOG_LEVEL: 'warn', MEDIA_ROOT: mediaRoot(), REDIS_URL: redis.url, MEDIA_KEK: KEK1, ...env });
  const jsonLines = () => p.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { ...p, jsonLines, done: p.exited.then((code) => ({ code, output: p.output(), summary: jsonLines().at(-1) })) };
}

/** `bytes=start-end` of the original through the stream function. */
async function range(videoId: string, start: number, end: number): Promise<Buffer> {
  const token = codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 120, scope: 'original.mp4' });
  const res = await fetch(`${stream.url}/media/videos/${videoId}/original.mp4?token=${token}`, { headers: { Range: `bytes=${start}-${end}` } });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 206) throw new Error(`range ${start}-${end}: ${res.status} ${body.toString().slice(0, 200)}`);
  return body;
}

async function expectRangesIdentical(videoId: string, bytes: Buffer, count = 4): Promise<void> {
  for (let i = 0; i < count; i++) {
    const start = Math.floor(Math.random() * bytes.length);
    const end = Math.min(bytes.length - 1, start + Math.floor(Math.random() * 3 * 65536));
    expect((await range(videoId, start, end)).equals(bytes.subarray(start, end + 1)), `${start}-${end}`).toBe(true);
  }
  expect((await range(videoId, 0, bytes.length - 1)).equals(bytes)).toBe(true);
}

/** Encrypted as finalize would have: ciphertext that decrypts to `bytes`, meta.json sealed and marked, no leftovers. */
async function expectEncrypted(videoId: string, bytes: Buffer): Promise<void> {
  const dir = path.join(videoDir(), videoId);
  const stored = readFileSync(path.join(dir, 'original.mp4'));
  // The source's box headers with what follows them, not the 4-byte types alone: those turn up by
  // chance in a large ciphertext (about 1 % for each in 48 MiB).
  for (const type of ['ftyp', 'mdat']) {
    const at = bytes.indexOf(type);
    if (at >= 4) expect(stored.includes(bytes.subarray(at - 4, at + 28)), type).toBe(false);
  }
  expect(stored.includes(bytes.subarray(0, 64))).toBe(false);
  expect(stored.includes(bytes.subarray(bytes.length - 4096, bytes.length - 4000))).toBe(false);
  const metaText = readFileSync(path.join(dir, 'meta.json'), 'utf8');
  for (const phi of [FILENAME, TITLE, 'Roe']) expect(metaText).not.toContain(phi);
  expect(JSON.parse(metaText)).toMatchObject({ encrypted: true, filename: '', metadata: {}, checksum: sha256(bytes), size: bytes.length });
  // The mark stays: nginx never sends this original itself (a grant cached while it was plaintext).
  expect(readdirSync(dir).sort()).toEqual([ORIGINAL_ENCRYPTED_MARK, 'meta.json', 'original.mp4']);
  const keys = keysWith(KEK1);
  expect(await new MediaStore(videoDir(), null, keys).read(videoId)).toMatchObject({ filename: FILENAME, metadata: { title: TITLE }, encrypted: true });
  const enc = await EncryptedFile.open(await open(path.join(dir, 'original.mp4'), 'r'), deriveKey((await keys.dataKey(videoId))!, 'original'), videoId);
  try {
    expect((await decryptRange(enc, 0, enc.size - 1)).equals(bytes)).toBe(true);
  } finally {
    await enc.close();
  }
}

/** The switch's grace is for the media edge's requests; these tests have none in flight but their own. */
const NO_GRACE = ['--switch-grace-ms', '0'];
/** How many `video.encrypted` entries the video has, once `expected` have reached the files. */
const encryptedEntries = async (videoId: string, expected: number) =>
  (await auditEntriesOnceThere(auditDir(), (e) => e.action === 'video.encrypted' && e.videoId === videoId, expected)).length;

describe('pulsevault encrypt', () => {
  it('encrypts every plaintext video in place while ranges read identically; skips deleted and transcoding videos; a rerun has nothing to do', async () => {
    const big = path.join(root, 'big.bin');
    writeFileSync(big, randomBytes(16 * 1024 * 1024));
    const small = await plaintextVideo(clipFile);
    const large = await plaintextVideo(big);
    const transcoding = await plaintextVideo(clipFile, { status: 'transcoding' });
    const deleted = await plaintextVideo(clipFile);
    // Transcoded, but a chunk of a new transcode is under way (its lease is held).
    const leased = await plaintextVideo(clipFile);
    const chunkLease = `${leaseKey(leased.videoId)}:chunk:0`;
    await redis.client().set(chunkLease, 'another-replica', 'PX', 60_000);
    writeFileSync(path.join(videoDir(), deleted.videoId, DELETED_MARK), '{}\n');
    await expectRangesIdentical(large.videoId, large.bytes);

    const run = cli(['encrypt', '--switch-grace-ms', '200', '--all']);
    // Readers throughout: every range answered during the run is the plaintext's.
    let reads = 0;
    let finished = false;
    const reading = (async () => {
      while (!finished) {
        const start = Math.floor(Math.random() * (large.bytes.length - 65536));
        expect((await range(large.videoId, start, start + 65535)).equals(large.bytes.subarray(start, start + 65536))).toBe(true);
        expect((await range(small.videoId, 0, clip.length - 1)).equals(clip)).toBe(true);
        reads++;
      }
    })();
    const done = await run.done;
    finished = true;
    await reading;
    expect(reads).toBeGreaterThan(0);
    expect(done.code, done.output).toBe(1); // one video waits for its transcode
    expect(done.summary).toMatchObject({ kek: 'k1', encrypted: 2, already: 0, deleted: 1, busy: 2, failed: 0 });
    for (const v of [transcoding, leased]) expect(run.jsonLines()).toContainEqual({ videoId: v.videoId, busy: 'transcoding' });
    expect(done.output).toMatch(/^encrypt: 2 encrypted \(0\.02 GiB\), 0 already, 1 deleted, 2 busy \(transcoding\), 0 failed$/m);
    expect(done.output).not.toContain(TITLE);

    for (const v of [small, large]) {
      await expectEncrypted(v.videoId, v.bytes);
      await expectRangesIdentical(v.videoId, v.bytes);
      expect(await encryptedEntries(v.videoId, 1)).toBe(1);
    }
    for (const v of [transcoding, leased, deleted]) {
      expect(readFileSync(path.join(videoDir(), v.videoId, 'original.mp4')).equals(clip)).toBe(true);
      expect(await keysWith(KEK1).dataKey(v.videoId)).toBeNull();
    }

    const again = await cli(['encrypt', ...NO_GRACE, '--all']).done;
    expect(again.summary).toMatchObject({ encrypted: 0, already: 2, deleted: 1, busy: 2 });
    // Transcoded since: the videos it waited for.
    await plainStore().update(transcoding.videoId, (m) => ({ ...m, status: 'transcoded' }));
    await redis.client().del(chunkLease);
    const one = await cli(['encrypt', ...NO_GRACE, transcoding.videoId]).done;
    expect(one.code, one.output).toBe(0);
    expect(one.summary).toMatchObject({ encrypted: 1 });
    const rest = await cli(['encrypt', ...NO_GRACE, '--all']).done;
    expect(rest.code, rest.output).toBe(0);
    expect(rest.summary).toMatchObject({ encrypted: 1, already: 3, deleted: 1, busy: 0, failed: 0 });
    for (const v of [transcoding, leased]) await expectEncrypted(v.videoId, clip);

    for (const bad of [['not-a-video'], ['--all', transcoding.videoId], ['--switch-grace-ms', '-1', '--all']]) expect((await cli(['encrypt', ...bad]).done).code, bad.join(' ')).toBe(64);
    const noKek = await cli(['encrypt', '--all'], { MEDIA_KEK: '' }).done;
    expect(noKek.code).toBe(78);
    expect(noKek.output.trim().split('\n')).toHaveLength(1);
  });

  it.each(ENCRYPT_STEPS.map((s) => [s]))('killed after %s: the original still reads whole, the rerun finishes', async (step) => {
    const v = await plaintextVideo(clipFile);
    const doomed = await cli([...NO_GRACE, v.videoId], { ENCRYPT_CRASH_AT: step }, 'test/helpers/crashing-encrypt.mjs').done;
    expect(doomed.code, doomed.output).toBeNull(); // killed by the signal
    await redis.client().del(metaLockKey(v.videoId)); // the dead holder's lock would lapse within its TTL
    await expectRangesIdentical(v.videoId, v.bytes, 2);
    const rerun = await cli(['encrypt', ...NO_GRACE, v.videoId]).done;
    expect(rerun.code, rerun.output).toBe(0);
    expect(rerun.summary).toMatchObject({ encrypted: 1 });
    await expectEncrypted(v.videoId, v.bytes);
    await expectRangesIdentical(v.videoId, v.bytes, 2);
    // Audited before the switch: once, or twice when the kill came after the entry and before the switch.
    const expected = step === 'after-audit' ? 2 : 1;
    expect(await encryptedEntries(v.videoId, expected)).toBe(expected);
  });

  it('killed while encrypting a large original: nothing lost, the rerun finishes', async () => {
    const big = path.join(root, 'large.bin');
    writeFileSync(big, randomBytes(48 * 1024 * 1024));
    const v = await plaintextVideo(big);
    const part = path.join(videoDir(), v.videoId, 'original.mp4.encrypting');
    const run = cli(['encrypt', ...NO_GRACE, v.videoId]);
    await waitFor(() => existsSync(part) && statSync(part).size > 0, 30_000, 'the ciphertext to be under way', 2);
    run.child.kill('SIGKILL');
    expect((await run.done).code).toBeNull();
    expect(readFileSync(path.join(videoDir(), v.videoId, 'original.mp4')).equals(v.bytes)).toBe(true);
    await expectRangesIdentical(v.videoId, v.bytes, 2);
    const rerun = await cli(['encrypt', ...NO_GRACE, '--all']).done;
    expect(rerun.code, rerun.output).toBe(0);
    await expectEncrypted(v.videoId, v.bytes);
    await expectRangesIdentical(v.videoId, v.bytes, 2);
  });
});

describe('pulsevault keys rotate | status', () => {
  it('rotates to a new KEK with the old one listed for reading, resumes a rotation cut short, counts keys per KEK', async () => {
    const before = await cli(['keys', 'status']).done;
    expect(before.code).toBe(0);
    const perKek = before.summary as { current: string; keys: Record<string, number> };
    expect(perKek.current).toBe('k1');
    const total = perKek.keys.k1!;
    expect(total).toBeGreaterThanOrEqual(3);
    expect(Object.keys(perKek.keys)).toEqual(['k1']);

    const rotating = { MEDIA_KEK: KEK2, MEDIA_KEK_PREVIOUS: KEK1 };
    // Without the old KEK listed, the keys it wraps cannot be read: refused at start-up, one line.
    const lacking = await cli(['keys', 'rotate'], { MEDIA_KEK: KEK2 }).done;
    expect(lacking.code).toBe(78);
    expect(lacking.output).toMatch(/MEDIA_KEK lacks KEK "k1"/);

    // A rotation killed after its first rewrap leaves exactly this (each key file is replaced atomically).
    const ids: string[] = [];
    for await (const e of keysWith(KEK2, [KEK1]).entries()) ids.push(e.videoId);
    const dataKeys = new Map(await Promise.all(ids.map(async (id) => [id, (await keysWith(KEK1).dataKey(id))!] as const)));
    await keysWith(KEK2, [KEK1]).verifyKeks();
    expect(await keysWith(KEK2, [KEK1]).rewrap(ids[0]!)).toBe('rewrapped');
    expect((await cli(['keys', 'status'], rotating).done).summary).toEqual({ current: 'k2', keys: { k1: total - 1, k2: 1 } });

    const rotate = await cli(['keys', 'rotate'], rotating).done;
    expect(rotate.code, rotate.output).toBe(0);
    expect(rotate.summary).toEqual({ kek: 'k2', rewrapped: total - 1, current: 1, failed: 0, retiredKeks: ['k1'] });
    expect(rotate.output).toMatch(/^keys rotate: \d+ rewrapped, \d+ already under k2, 0 failed$/m);
    expect((await cli(['keys', 'status'], { MEDIA_KEK: KEK2 }).done).summary).toEqual({ current: 'k2', keys: { k2: total } });
    expect(await auditEntriesOnceThere(auditDir(), (e) => e.action === 'keys.rewrapped', total - 1)).toHaveLength(total - 1);
    expect(await auditEntriesOnceThere(auditDir(), (e) => e.action === 'keys.rotated', 1)).toHaveLength(1);

    // The new KEK alone opens every video's key unchanged; the old one no longer does.
    const after = keysWith(KEK2);
    await after.verifyKeks();
    for (const [id, key] of dataKeys) expect((await after.dataKey(id))!.equals(key)).toBe(true);
    await expect(keysWith(KEK1).dataKey(ids[0]!)).rejects.toMatchObject({ code: 'key_unavailable' });
    for (const id of ids) expect(readFileSync(after.file(id), 'utf8')).not.toContain(dataKeys.get(id)!.toString('base64'));
  });
});
