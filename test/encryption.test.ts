/**
 * Encryption at rest (shared/keys/, shared/crypto/): the chunked format alone, then one real stack
 * with a MEDIA_KEK: finalize encrypts, the folder holds no plaintext, stream decrypts ranges at
 * chunk boundaries, the transcoder reads the original over loopback and seals the poster and
 * sprites (served decrypted through the media edge by the function), a flipped ciphertext byte is
 * refused and found by the scrub, a rotated KEK still reads old videos, a wrong KEK stops a
 * function with one line, and a delete shreds the key so an earlier copy of the folder is noise.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync, openSync, readSync, writeSync, closeSync, type Dirent } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuditLog } from '../shared/audit/client.js';
import { CHUNK_BYTES, EncryptedFile, encryptFile, IntegrityError, verifyEncryptedFile } from '../shared/crypto/chunked.js';
import { IMAGES_SEALED_MARK } from '../shared/crypto/images.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { SecretKek } from '../shared/keys/kek.js';
import { deriveKey, destroyDataKey, renditionKey, UnwrappedKeyCache, VideoKeys } from '../shared/keys/video-keys.js';
import { disposeVideo } from '../shared/lifecycle/dispose.js';
import { loadConfig } from '../shared/platform/config.js';
import { newId } from '../shared/platform/ids.js';
import { createLogger } from '../shared/platform/log.js';
import { scrubVideo, Pacer } from '../shared/video/scrub.js';
import { MediaStore } from '../shared/video/store.js';
import { freePort } from '../services/devstack/supervisor.js';
import { readAuditEntries } from './helpers/audit.js';
import { rawRequest } from './helpers/raw-http.js';
import { launchChromium, PLAY_ENCRYPTED, playerPage } from './helpers/browser.js';
import { makeClip } from './helpers/media.js';
import { STACK_START_DEADLINE_MS, startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { createUpload, finalize, patch, sha256, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';
import { decryptRange } from './helpers/decrypt.js';
import { entropy } from './helpers/ciphertext.js';

const kekSpec = (id: string) => `${id}:${randomBytes(32).toString('base64')}`;
const KEK1 = kekSpec('k1');
const kekOf = (spec: string) => ({ id: spec.split(':')[0]!, key: Buffer.from(spec.split(':')[1]!, 'base64') });
const FILENAME = 'Jane-Doe-knee-MRI-2024.mp4';
const TITLE = 'Follow-up of Jane Doe';
const DESCRIPTION = 'Post-op week 6, left knee';

describe('the chunked format', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-chunked-'));
  const plain = randomBytes(3 * CHUNK_BYTES + 1234);
  const key = randomBytes(32);
  const videoId = newId();
  const file = path.join(dir, 'enc');

  beforeAll(async () => {
    writeFileSync(path.join(dir, 'plain'), plain);
    expect(await encryptFile(path.join(dir, 'plain'), file, key, videoId)).toEqual({ checksum: sha256(plain), size: plain.length });
  });

  it('decrypts any range, reading only its chunks, at and across chunk boundaries', async () => {
    const enc = await EncryptedFile.open(await open(file, 'r'), key, videoId);
    try {
      expect(enc.size).toBe(plain.length);
      const c = CHUNK_BYTES;
      for (const [s, e] of [[0, 0], [c - 1, c], [c, c], [c - 1, c - 1], [c, 2 * c - 1], [5, 3 * c + 10], [3 * c, plain.length - 1], [plain.length - 1, plain.length - 1], [0, plain.length - 1]] as const) {
        expect((await decryptRange(enc, s, e)).equals(plain.subarray(s, e + 1)), `${s}-${e}`).toBe(true);
      }
    } finally {
      await enc.close();
    }
  });

  it('concurrent ranges spanning windows each get their own bytes (read buffers are reused between ranges)', async () => {
    const large = randomBytes(9 * 1024 * 1024 + 4321);
    writeFileSync(path.join(dir, 'large-plain'), large);
    await encryptFile(path.join(dir, 'large-plain'), path.join(dir, 'large'), key, videoId);
    const enc = await EncryptedFile.open(await open(path.join(dir, 'large'), 'r'), key, videoId);
    try {
      // Starts and ends off chunk boundaries, 1 to 3 windows each, all in flight at once.
      const ranges = Array.from({ length: 12 }, (_, i) => [i * 300_007, large.length - 1 - i * 500_009] as const);
      const reads = await Promise.all(ranges.map(([s, e]) => decryptRange(enc, s, e)));
      reads.forEach((got, i) => expect(got.equals(large.subarray(ranges[i]![0], ranges[i]![1] + 1)), `${ranges[i]}`).toBe(true));
    } finally {
      await enc.close();
    }
  });

  it('seals files of every window shape (empty, one byte, exactly a window, a window and a byte) that hash and decrypt to their plaintext', async () => {
    const windowBytes = 64 * CHUNK_BYTES;
    for (const size of [0, 1, windowBytes, windowBytes + 1]) {
      const source = randomBytes(size);
      writeFileSync(path.join(dir, `shape-${size}`), source);
      expect(await encryptFile(path.join(dir, `shape-${size}`), path.join(dir, `shape-${size}.enc`), key, videoId)).toEqual({ checksum: sha256(source), size });
      expect(await verifyEncryptedFile(path.join(dir, `shape-${size}.enc`), key, videoId), `${size}`).toEqual({ checksum: sha256(source), size });
    }
  });

  it('a full disk while a worker seals: the ENOSPC the finalize maps to 507 (not a bare error), nothing left in flight', async () => {
    const full = path.join(dir, 'full');
    mkdirSync(full);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
    try {
      const source = randomBytes(5 * 1024 * 1024); // the second window no longer fits
      writeFileSync(path.join(dir, 'too-large'), source);
      await expect(encryptFile(path.join(dir, 'too-large'), path.join(full, 'enc'), key, videoId)).rejects.toMatchObject({ code: 'ENOSPC' });
    } finally {
      execFileSync('umount', [full]); // refused (EBUSY) if the worker still held the file open
    }
  });

  it('a process that sealed and opened files through the workers exits on its own once they are idle', async () => {
    const chunked = path.resolve('dist/shared/crypto/chunked.js');
    const source = randomBytes(5 * 1024 * 1024); // two windows
    writeFileSync(path.join(dir, 'exit-plain'), source);
    const script = `const { encryptFile, verifyEncryptedFile } = await import(${JSON.stringify(chunked)});
      const key = Buffer.alloc(32, 7);
      await encryptFile(${JSON.stringify(path.join(dir, 'exit-plain'))}, ${JSON.stringify(path.join(dir, 'exit.enc'))}, key, ${JSON.stringify(videoId)});
      console.log((await verifyEncryptedFile(${JSON.stringify(path.join(dir, 'exit.enc'))}, key, ${JSON.stringify(videoId)})).checksum);`;
    writeFileSync(path.join(dir, 'exit.mjs'), script);
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(dir, 'exit.mjs')], { timeout: 30_000 });
    expect(stdout.trim()).toBe(sha256(source));
  });

  it('refuses a flipped byte, a wrong key and another video id: errors, never bytes', async () => {
    const bytes = readFileSync(file);
    const flipped = Buffer.from(bytes);
    flipped[32 + CHUNK_BYTES + 16 + 7]! ^= 1; // inside chunk 1
    writeFileSync(path.join(dir, 'flipped'), flipped);
    const enc = await EncryptedFile.open(await open(path.join(dir, 'flipped'), 'r'), key, videoId);
    try {
      expect((await decryptRange(enc, 0, 100)).equals(plain.subarray(0, 101))).toBe(true); // chunk 0 is intact
      await expect(decryptRange(enc, CHUNK_BYTES + 5, CHUNK_BYTES + 6)).rejects.toBeInstanceOf(IntegrityError);
    } finally {
      await enc.close();
    }
    await expect(verifyEncryptedFile(path.join(dir, 'flipped'), key, videoId)).rejects.toMatchObject({ chunk: 1 });
    await expect(verifyEncryptedFile(file, randomBytes(32), videoId)).rejects.toBeInstanceOf(IntegrityError);
    await expect(verifyEncryptedFile(file, key, newId())).rejects.toBeInstanceOf(IntegrityError);
    writeFileSync(path.join(dir, 'cut'), bytes.subarray(0, bytes.length - 1)); // truncated: the header no longer fits
    await expect(verifyEncryptedFile(path.join(dir, 'cut'), key, videoId)).rejects.toBeInstanceOf(IntegrityError);
  });

  it('rotation rewraps a key without changing it; a store with only the new KEK reads it; a wrong KEK is refused at start-up', async () => {
    const keyDir = path.join(dir, 'keys');
    const v = newId();
    const old = new VideoKeys(keyDir, new SecretKek(kekOf(KEK1)));
    await old.verifyKeks();
    const dataKey = await old.create(v);
    const k2 = kekOf(kekSpec('k2'));
    const rotating = new VideoKeys(keyDir, new SecretKek(k2, [kekOf(KEK1)]));
    await rotating.verifyKeks();
    expect(await rotating.rewrap(v)).toBe('rewrapped');
    expect(await rotating.rewrap(v)).toBe('current'); // resumable: done ones are skipped
    expect(await rotating.retireUnusedKeks()).toEqual(['k1']);
    const after = new VideoKeys(keyDir, new SecretKek(k2));
    await after.verifyKeks();
    expect((await after.dataKey(v))!.equals(dataKey)).toBe(true);
    expect(readFileSync(after.file(v), 'utf8')).not.toContain(dataKey.toString('base64'));
    await expect(new VideoKeys(keyDir, new SecretKek({ id: 'k2', key: randomBytes(32) })).verifyKeks()).rejects.toThrow(/MEDIA_KEK holds a wrong key for KEK "k2"/);
    await expect(new VideoKeys(keyDir, new SecretKek(kekOf(kekSpec('k3')))).verifyKeks()).rejects.toThrow(/MEDIA_KEK lacks KEK "k2"/);
  });

  it('a key cache answers from memory for its time only, holds at most its bound, and hands out copies', async () => {
    const keyDir = path.join(dir, 'cached-keys');
    const kek = new SecretKek(kekOf(KEK1));
    const [a, b, c] = [newId(), newId(), newId()];
    const maker = new VideoKeys(keyDir, kek);
    const keyOf = Object.fromEntries(await Promise.all([a, b, c].map(async (v) => [v, await maker.create(v)] as const)));
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const cached = new VideoKeys(keyDir, kek, new UnwrappedKeyCache(1_000, 2));
      const first = (await cached.dataKey(a))!;
      expect(first.equals(keyOf[a]!)).toBe(true);
      first.fill(0); // a caller that zeroes its copy does not zero the cache's
      await destroyDataKey(keyDir, a);
      expect(await maker.dataKey(a)).toBeNull();
      expect((await cached.dataKey(a))!.equals(keyOf[a]!)).toBe(true); // from memory: the file is gone
      vi.setSystemTime(Date.now() + 1_001);
      expect(await cached.dataKey(a)).toBeNull(); // its time is up: the file is read again
      expect((await cached.dataKey(b))!.equals(keyOf[b]!)).toBe(true);
      expect((await cached.dataKey(c))!.equals(keyOf[c]!)).toBe(true);
      await cached.dataKey(b); // b is now the most recently used: c is the one left when a third comes
      await maker.create(a);
      await cached.dataKey(a);
      await destroyDataKey(keyDir, b);
      await destroyDataKey(keyDir, c);
      expect(await cached.dataKey(b)).not.toBeNull();
      expect(await cached.dataKey(c)).toBeNull(); // evicted: at most two kept
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('an encrypted vault, end to end', () => {
  let stack: TestStack;
  let clip: Buffer;
  let videoId: string;
  const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
  const token = (scope: string) => codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 120, scope });
  const keys = () => new VideoKeys(path.join(stack.mediaRoot, 'keys'), new SecretKek(kekOf(KEK1)));
  const folder = () => path.join(stack.mediaRoot, 'videos', videoId);
  const original = async (range?: string) => fetch(`${stack.url}/media/videos/${videoId}/original.mp4?token=${token('original.mp4')}`, { headers: range ? { Range: range } : {} });

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-encrypted-'));
    [stack, clip] = await Promise.all([
      startStack({ env: { MEDIA_KEK: KEK1, RENDITIONS: '240p', FFMPEG_PRESET: 'ultrafast', TRANSCODE_CHUNK_SEGMENTS: '0' } }),
      makeClip(path.join(dir, 'clip.mp4'), { seconds: 2 }).then((f) => readFileSync(f)),
    ]);
    const url = await createUpload(`${stack.url}/uploads`, clip.length);
    expect((await patch(url, 0, clip)).status).toBe(204);
    const res = await finalize(stack.url, { uploadId: uploadIdOf(url), filename: FILENAME, userId: 'clinician-7', metadata: { title: TITLE, description: DESCRIPTION } });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ checksum: sha256(clip), size: clip.length });
    videoId = res.json.videoId as string;
  }, STACK_START_DEADLINE_MS + 60_000);
  afterAll(async () => {
    await stack?.stop();
  });

  it('stores no plaintext: a high-entropy original without the source\'s boxes, meta.json without PHI, no key in the folder', async () => {
    const stored = readFileSync(path.join(folder(), 'original.mp4'));
    expect(stored.length).toBeGreaterThan(clip.length);
    expect(stored.includes(Buffer.from('ftyp'))).toBe(false);
    expect(stored.includes(Buffer.from('mdat'))).toBe(false);
    expect(stored.includes(clip.subarray(clip.length - 4096, clip.length - 4000))).toBe(false);
    expect(entropy(stored.subarray(32))).toBeGreaterThan(7.9);
    const meta = readFileSync(path.join(folder(), 'meta.json'), 'utf8');
    for (const phi of [FILENAME, TITLE, DESCRIPTION, 'Jane']) expect(meta).not.toContain(phi);
    expect(JSON.parse(meta)).toMatchObject({ encrypted: true, filename: '', metadata: {} });
    expect(readdirSync(folder()).some((n) => n.includes('key'))).toBe(false);
    // Transparent to readers with the keys.
    expect(await new MediaStore(path.join(stack.mediaRoot, 'videos'), null, keys()).read(videoId)).toMatchObject({ filename: FILENAME, metadata: { title: TITLE, description: DESCRIPTION } });
    const m = await fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${token('original.mp4')}`);
    expect(await m.json()).toMatchObject({ videoId, encrypted: true, size: clip.length });
  });

  it('streams the decrypted original: whole, HEAD, and ranges at chunk boundaries', async () => {
    const whole = await original();
    expect(whole.status).toBe(200);
    expect(Buffer.from(await whole.arrayBuffer()).equals(clip)).toBe(true);
    const head = await fetch(`${stack.url}/media/videos/${videoId}/original.mp4?token=${token('original.mp4')}`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(clip.length));
    const c = CHUNK_BYTES;
    for (const [s, e] of [[0, 0], [c - 1, c], [c, 2 * c - 1], [clip.length - 1, clip.length - 1]] as const) {
      const r = await original(`bytes=${s}-${e}`);
      expect(r.status, `${s}-${e}`).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${s}-${e}/${clip.length}`);
      expect(Buffer.from(await r.arrayBuffer()).equals(clip.subarray(s, e + 1)), `${s}-${e}`).toBe(true);
    }
    expect((await original(`bytes=${clip.length}-`)).status).toBe(416);
  });

  it('transcodes from the encrypted original (ffmpeg reads it over loopback)', async () => {
    const store = new MediaStore(path.join(stack.mediaRoot, 'videos'));
    await waitFor(async () => (await store.read(videoId)).status === 'transcoded', 120_000, 'the video to be transcoded', 250);
    const meta = await store.read(videoId);
    expect(meta.renditions).toEqual(['240p']);
    expect(existsSync(path.join(folder(), meta.outputs!.hlsMaster!))).toBe(true);
    expect(existsSync(path.join(folder(), meta.outputs!.poster!))).toBe(true);
  });

  it('renditions are CENC-encrypted: every init segment describes encrypted samples, no segment decodes without the key, and each decodes with it', async () => {
    const hls = path.join(folder(), 'hls');
    const names = readdirSync(hls);
    const inits = names.filter((n) => /^init_\d+\.m4s$/.test(n));
    expect(inits.length).toBe(2); // 240p and audio
    const key = renditionKey((await keys().dataKey(videoId))!).toString('hex');
    const decode = (file: string, withKey: boolean) =>
      promisify(execFile)('ffmpeg', ['-v', 'error', ...(withKey ? ['-decryption_key', key] : []), '-i', file, '-f', 'null', '-'], { maxBuffer: 64 * 1024 * 1024 }).then(
        (r) => r.stderr,
        (e: { stderr: string }) => e.stderr || 'failed',
      );
    const tmp = mkdtempSync(path.join(tmpdir(), 'pv-cenc-'));
    for (const init of inits) {
      const index = /\d+/.exec(init)![0];
      const initBytes = readFileSync(path.join(hls, init));
      expect(initBytes.includes(Buffer.from('encv')) || initBytes.includes(Buffer.from('enca')), init).toBe(true);
      expect(initBytes.includes(Buffer.from('tenc')), init).toBe(true);
      const segments = names.filter((n) => n.startsWith(`seg_${index}_`));
      expect(segments.length).toBeGreaterThan(0);
      for (const seg of segments) {
        const file = path.join(tmp, `${seg}.mp4`);
        writeFileSync(file, Buffer.concat([initBytes, readFileSync(path.join(hls, seg))]));
        expect(await decode(file, false), `${seg} without the key`).not.toBe('');
        expect(await decode(file, true), `${seg} with the key`).toBe('');
      }
    }
    const manifest = readFileSync(path.join(hls, 'manifest.mpd'), 'utf8');
    expect(manifest).toContain(`cenc:default_KID="${videoId}"`);
    expect(readFileSync(path.join(hls, '240p.m3u8'), 'utf8')).toMatch(/^#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT="org.w3.clearkey"/m);
    for (const n of names) expect(readFileSync(path.join(hls, n)).includes(Buffer.from(key, 'hex')), n).toBe(false);
  });

  /** Every file under the video's folder, as paths within it. */
  const folderFiles = () => (readdirSync(folder(), { recursive: true, withFileTypes: true }) as Dirent[]).filter((e) => e.isFile()).map((e) => path.relative(folder(), path.join(e.parentPath, e.name)));
  const imageKey = async () => deriveKey((await keys().dataKey(videoId))!, 'image');
  /** A sealed image's plaintext, decrypted from the folder with the vault's keys. */
  const unsealed = async (image: string) => {
    const enc = await EncryptedFile.open(await open(path.join(folder(), image), 'r'), await imageKey(), videoId);
    return decryptRange(enc, 0, enc.size - 1).finally(() => enc.close());
  };
  const JPEG_SOI = Buffer.from([0xff, 0xd8, 0xff]);

  it('no file of the transcoded folder holds plaintext: poster and sprite sheets sealed (no JPEG markers), marked, no PHI string anywhere', async () => {
    const files = folderFiles();
    const images = files.filter((f) => f.endsWith('.jpg'));
    expect(images).toEqual(expect.arrayContaining(['hls/poster.jpg', 'hls/thumbs_0_000.jpg']));
    expect(files).toContain(`hls/${IMAGES_SEALED_MARK}`);
    for (const f of files) {
      const bytes = readFileSync(path.join(folder(), f));
      for (const phi of [FILENAME, TITLE, DESCRIPTION, 'Jane']) expect(bytes.includes(Buffer.from(phi)), `${f}: ${phi}`).toBe(false);
      expect(bytes.subarray(0, 3).equals(JPEG_SOI), f).toBe(false);
      // JFIF (APP0) and Lavc (ffmpeg's comment) are in every JPEG ffmpeg writes.
      expect(bytes.includes(Buffer.from('JFIF')) || bytes.includes(Buffer.from('Lavc')), f).toBe(false);
    }
    for (const image of images) {
      const stored = readFileSync(path.join(folder(), image));
      expect(stored.subarray(0, 8).toString('latin1'), image).toBe('PVAEAD01');
      expect(entropy(stored.subarray(32)), image).toBeGreaterThan(7.8);
      const plain = await unsealed(image);
      expect(plain.subarray(0, 3).equals(JPEG_SOI), image).toBe(true);
      expect(stored.includes(plain.subarray(plain.length - 64)), image).toBe(false);
    }
  });

  it('poster and a sprite sheet named by thumbnails.vtt come through the media edge decided by the stream function (audited) and decrypted by the edge, as the function answers them; no token 403', async () => {
    const t = token('hls/');
    const base = `/media/videos/${videoId}/hls`;
    const vtt = await (await fetch(`${stack.url}${base}/thumbnails.vtt?token=${t}`)).text();
    // A standard thumbnail plug-in resolves the cue's image against the index's URL: the token is in it.
    const cue = /^(thumbs_0_000\.jpg\?token=[^#\s]+)#xywh=\d+,\d+,\d+,\d+$/m.exec(vtt)?.[1];
    expect(cue).toBeDefined();
    const auditDir = path.join(stack.mediaRoot, 'audit');
    const granted = (resource: string) => readAuditEntries(auditDir).filter((e) => e.action === 'stream' && e.outcome === 'granted' && e.resource === resource).length;
    const tmp = mkdtempSync(path.join(tmpdir(), 'pv-images-'));
    for (const [image, url] of [['hls/poster.jpg', `${base}/poster.jpg?token=${t}`], ['hls/thumbs_0_000.jpg', `${base}/${cue}`]] as const) {
      const before = granted(image);
      const res = await rawRequest(stack.url, url);
      expect(res.status, image).toBe(200);
      expect(res.headers.server, image).toBe('nginx');
      // Decided by the function, decrypted and sent by the edge's module (the function's own header stays behind the redirect).
      expect(res.headers['x-pulsevault-function'], image).toBeUndefined();
      expect(res.headers['content-type'], image).toBe('image/jpeg');
      expect(res.headers['cache-control'], image).toBe('private');
      expect(res.headers.etag, image).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
      expect(res.body.subarray(0, 3).equals(JPEG_SOI), image).toBe(true);
      expect(res.body.equals(await unsealed(image)), image).toBe(true);
      expect(Number(res.headers['content-length']), image).toBe(res.body.length);
      writeFileSync(path.join(tmp, 'got.jpg'), res.body);
      const decoded = await promisify(execFile)('ffmpeg', ['-v', 'error', '-i', path.join(tmp, 'got.jpg'), '-f', 'null', '-']);
      expect(decoded.stderr, image).toBe('');
      // The same answer as the function's own (no edge), and its validators and ranges over the plaintext.
      const direct = await rawRequest(stack.url, `/function/stream${url}`);
      expect([direct.status, direct.headers.etag, direct.headers['content-length'], direct.body.equals(res.body)], image).toEqual([200, res.headers.etag, res.headers['content-length'], true]);
      expect((await rawRequest(stack.url, url, { 'If-None-Match': res.headers.etag as string })).status, image).toBe(304);
      const range = await rawRequest(stack.url, url, { Range: 'bytes=0-2' });
      expect([range.status, range.headers['content-range'], range.body.equals(JPEG_SOI)], image).toEqual([206, `bytes 0-2/${res.body.length}`, true]);
      await waitFor(() => granted(image) - before >= 4, 10_000, `the reads of ${image} audited`);
      const refused = await rawRequest(stack.url, url.split('?')[0]!);
      expect(refused.status, image).toBe(403);
      expect(JSON.parse(refused.body.toString()), image).toMatchObject({ error: 'token_missing' });
    }
  });

  it('a flipped byte in a sealed image: never served (500 media_integrity, through the edge and without it), the scrub names the image', async () => {
    const file = path.join(folder(), 'hls', 'poster.jpg');
    const at = 32 + 100; // chunk 0
    const fd = openSync(file, 'r+');
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, at);
    writeSync(fd, Buffer.from([one[0]! ^ 0x01]), 0, 1, at);
    try {
      const url = `/media/videos/${videoId}/hls/poster.jpg?token=${token('hls/')}`;
      for (const via of ['', '/function/stream']) {
        const bad = await rawRequest(stack.url, `${via}${url}`);
        expect(bad.status, via).toBe(500);
        expect(bad.headers['content-type'], via).toMatch(/^application\/json/);
        expect(JSON.parse(bad.body.toString()), via).toMatchObject({ error: 'media_integrity' });
      }
      const problem = await scrubVideo(path.join(stack.mediaRoot, 'videos'), videoId, new Pacer(0), () => {}, keys());
      expect(problem).toMatchObject({ problem: 'ciphertext_tampered', detail: expect.stringMatching(/^hls\/poster\.jpg: /) });
    } finally {
      writeSync(fd, one, 0, 1, at);
      closeSync(fd);
    }
    expect(await scrubVideo(path.join(stack.mediaRoot, 'videos'), videoId, new Pacer(0), () => {}, keys())).toBeNull();
  });

  it('the key URL refuses without a token, with another video\'s or another scope\'s, and for GET; granted, it answers the ClearKey license, no-store, audited without the key', async () => {
    const keyUrl = (t: string | null) => `${stack.url}/media/videos/${videoId}/hls/clearkey${t === null ? '' : `?token=${t}`}`;
    const post = (t: string | null) => fetch(keyUrl(t), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"kids":[],"type":"temporary"}' });
    expect((await post(null)).status).toBe(403);
    const other = codec.sign({ videoId: newId(), exp: Math.floor(Date.now() / 1000) + 120, scope: 'hls/' });
    const wrongVideo = await post(other);
    expect(wrongVideo.status).toBe(403);
    expect(await wrongVideo.json()).toMatchObject({ error: 'wrong_video' });
    expect((await post(token('original.mp4'))).status).toBe(403);
    expect((await fetch(keyUrl(token('hls/')))).status).toBe(405);
    const granted = await post(token('hls/'));
    expect(granted.status).toBe(200);
    expect(granted.headers.get('cache-control')).toBe('no-store');
    const key = renditionKey((await keys().dataKey(videoId))!);
    expect(await granted.json()).toEqual({ keys: [{ kty: 'oct', kid: Buffer.from(videoId.replaceAll('-', ''), 'hex').toString('base64url'), k: key.toString('base64url') }], type: 'temporary' });
    const auditDir = path.join(stack.mediaRoot, 'audit');
    const entries = await waitFor(() => {
      const e = readAuditEntries(auditDir).filter((x) => x.action === 'content_key');
      return e.some((x) => x.outcome === 'granted' && x.videoId === videoId) && e.filter((x) => x.outcome === 'denied').length >= 3 ? e : null;
    }, 30_000, 'the key fetches audited');
    expect(entries.find((x) => x.outcome === 'granted')).toMatchObject({ category: 'access', resource: 'hls/clearkey', videoId });
    expect(entries.map((x) => x.reason)).toEqual(expect.arrayContaining(['token_missing', 'wrong_video', 'out_of_scope']));
    const written = JSON.stringify(readAuditEntries(auditDir)) + stack.output();
    expect(written).not.toContain(key.toString('base64url'));
    expect(written).not.toContain(key.toString('hex'));
  });

  it('hls.js and dash.js play the encrypted renditions in Chromium through the media edge, with the key from the key URL; the page shows the sealed poster and sprites', async () => {
    const browser = await launchChromium();
    try {
      const page = await playerPage(browser, stack.url);
      const t = token('hls/');
      const base = `${stack.url}/media/videos/${videoId}/hls`;
      for (const kind of ['hls', 'dash'] as const) {
        const args = { kind, master: `${base}/master.m3u8?token=${t}`, mpd: `${base}/manifest.mpd?token=${t}`, license: `${base}/clearkey?token=${t}` };
        const played = (await page.evaluate(`(${PLAY_ENCRYPTED})(${JSON.stringify(args)})`)) as { error: string | null; currentTime: number; width: number; frames: number };
        expect(played, kind).toMatchObject({ error: null, width: 320 });
        expect(played.currentTime, kind).toBeGreaterThanOrEqual(1);
        expect(played.frames, kind).toBeGreaterThan(10);
      }
      // The sealed images as a page shows them: the poster, and a sprite sheet as a thumbnail plug-in finds it (the cue's URL resolved against the index's).
      const images = (await page.evaluate(`(async (vtt) => {
        const cue = /^(thumbs_\\S+?)#xywh=/m.exec(await (await fetch(vtt)).text())[1];
        const load = async (src) => { const img = new Image(); img.src = src; await img.decode(); return [img.naturalWidth, img.naturalHeight]; };
        return [await load(vtt.replace('thumbnails.vtt', 'poster.jpg')), await load(new URL(cue, vtt).href)];
      })(${JSON.stringify(`${base}/thumbnails.vtt?token=${t}`)})`)) as [number, number][];
      expect(images).toEqual([[320, 240], [160, 120]]);
    } finally {
      await browser.close();
    }
  });

  it('a flipped ciphertext byte: stream answers an error for its chunk (never bytes), the scrub flags it', async () => {
    const file = path.join(folder(), 'original.mp4');
    const at = 32 + CHUNK_BYTES + 16 + 100; // chunk 1
    const fd = openSync(file, 'r+');
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, at);
    writeSync(fd, Buffer.from([one[0]! ^ 0x40]), 0, 1, at);
    try {
      const url = `/media/videos/${videoId}/original.mp4?token=${token('original.mp4')}`;
      // Decrypted by the edge's module, and by the function without the edge.
      for (const via of ['', '/function/stream']) {
        expect((await rawRequest(stack.url, `${via}${url}`, { Range: 'bytes=0-99' })).status, via).toBe(206);
        const bad = await rawRequest(stack.url, `${via}${url}`, { Range: `bytes=${CHUNK_BYTES}-${CHUNK_BYTES + 99}` });
        expect(bad.status, via).toBe(500);
        expect(JSON.parse(bad.body.toString()), via).toMatchObject({ error: 'media_integrity' });
      }
      const problem = await scrubVideo(path.join(stack.mediaRoot, 'videos'), videoId, new Pacer(0), () => {}, keys());
      expect(problem).toMatchObject({ problem: 'ciphertext_tampered' });
    } finally {
      writeSync(fd, one, 0, 1, at);
      closeSync(fd);
    }
    expect(await scrubVideo(path.join(stack.mediaRoot, 'videos'), videoId, new Pacer(0), () => {}, keys())).toBeNull();
  });

  it('a wrong KEK stops a function at start-up with one line', async () => {
    const err = await promisify(execFile)(process.execPath, ['dist/templates/pulsevault-node20/runtime/main.js', 'dist/functions/stream/handler.js'], {
      env: { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: stack.mediaRoot, MEDIA_KEK: `k1:${randomBytes(32).toString('base64')}`, SECRETS_DIR: path.join(stack.mediaRoot, 'none'), PORT: String(await freePort()), NODE_ENV: 'test' },
    }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(78);
    expect(err?.stderr.trim().split('\n')).toHaveLength(1);
    expect(err?.stderr).toMatch(/^invalid configuration: MEDIA_KEK holds a wrong key for KEK "k1"/);
  });

  it('delete shreds the data key first: a copy of the folder from before cannot be decrypted', async () => {
    const copy = mkdtempSync(path.join(tmpdir(), 'pv-shred-copy-'));
    cpSync(folder(), copy, { recursive: true });
    const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url, MEDIA_KEK: KEK1 }, { secretsDir: path.join(stack.mediaRoot, 'none') });
    const log = createLogger('test', 'error');
    const store = new MediaStore(config.videoDir, stack.redis.client(), keys());
    const audit = createAuditLog(config, stack.redis.client(), log);
    try {
      const steps: string[] = [];
      await disposeVideo({ config, store, redis: stack.redis.client(), audit, log, onStep: (s) => void steps.push(`${s}:${existsSync(keys().file(videoId))}`) }, videoId, 'duplicate', { actor: null, requestId: null, clientIp: null });
      expect(steps).toContain('shred:true');
      expect(steps).toContain('stop:false'); // gone before any media file
    } finally {
      await audit.close();
    }
    expect(await keys().dataKey(videoId)).toBeNull();
    // The copy, with the vault's KEK and key store as they are now: neither original nor PHI opens.
    const sealed = JSON.parse(readFileSync(path.join(copy, 'meta.json'), 'utf8')) as { sealed?: unknown };
    expect(sealed.sealed).toBeDefined();
    const restored = mkdtempSync(path.join(tmpdir(), 'pv-shred-restore-'));
    cpSync(copy, path.join(restored, videoId), { recursive: true });
    const reread = await new MediaStore(restored, null, keys()).read(videoId);
    expect(reread.filename).toBe('');
    expect(JSON.stringify(reread)).not.toContain('Jane');
    const problem = await scrubVideo(restored, videoId, new Pacer(0), () => {}, keys());
    expect(problem).toMatchObject({ problem: 'key_missing' });
    expect(readFileSync(path.join(restored, videoId, 'original.mp4')).includes(Buffer.from('ftyp'))).toBe(false);
  });
});
