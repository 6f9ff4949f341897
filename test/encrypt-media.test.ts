/**
 * `pulsevault encrypt` on videos transcoded in the clear (shared/crypto/migrate-media.ts), as an
 * operator runs it against a real stack with MEDIA_KEK (media edge, stream function, audit writer):
 * a real ladder (the transcoder without a key), then the run. During the retirement grace the old
 * playlists' clear segments still come byte-identical through the edge while the new playlists name
 * CENC segments; after it no file of the folder holds plaintext and the scrub passes; a kill after
 * each step leaves a playable video and the rerun finishes; hls.js keeps playing a clear playlist
 * it loaded before the switch, and hls.js and dash.js play the migrated video with the key.
 */
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, type Dirent } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES_SEALED_MARK, IMAGES_SEALING_MARK } from '../shared/crypto/images.js';
import { ORIGINAL_ENCRYPTED_MARK } from '../shared/crypto/original-response.js';
import { GENERATION_DIR, MEDIA_STEPS, RETIRE_MARK } from '../shared/crypto/migrate-media.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { SecretKek } from '../shared/keys/kek.js';
import { VideoKeys } from '../shared/keys/video-keys.js';
import { newId } from '../shared/platform/ids.js';
import { leaseKey } from '../shared/transcode/lease.js';
import { checkEncoders, transcodeVideo } from '../shared/transcode/transcoder.js';
import { Pacer, scrubVideo } from '../shared/video/scrub.js';
import { metaLockKey, MediaStore } from '../shared/video/store.js';
import { auditEntriesOnceThere } from './helpers/audit.js';
import { launchChromium, PLAY_ENCRYPTED, playerPage } from './helpers/browser.js';
import { makeClip } from './helpers/media.js';
import { baseTestEnv, spawnNode } from './helpers/node-process.js';
import { STACK_START_DEADLINE_MS, startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { startTranscoder, transcodeJob } from './helpers/transcoder.js';
import { sha256 } from './helpers/uploads.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const KEK = `k1:${randomBytes(32).toString('base64')}`;
const kek = { id: 'k1', key: Buffer.from(KEK.split(':')[1]!, 'base64') };
const FILENAME = 'Ann-Poe-gait-study.mp4';
const TITLE = 'Gait of Ann Poe';
const SECONDS = 8;

let stack: TestStack;
/** A video transcoded in the clear, outside the stack: the folder each test copies. */
let source: string;
let work: string;
const videoDir = () => path.join(stack.mediaRoot, 'videos');
const keys = () => new VideoKeys(path.join(stack.mediaRoot, 'keys'), new SecretKek(kek));
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
const token = (videoId: string, dir = 'hls') => codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 240, scope: `${dir}/` });

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'pv-encrypt-media-'));
  const transcoded = (async () => {
    const harness = await startTranscoder(path.join(work, 'media'), { RENDITIONS: '240p', TRANSCODE_CHUNK_SEGMENTS: '0' });
    try {
      const clip = await makeClip(path.join(work, 'clip.mp4'), { seconds: SECONDS });
      const meta = await addVideo(harness.store, clip, { status: 'queued' });
      expect(await transcodeVideo(harness.deps, await checkEncoders(harness.config), transcodeJob(meta.videoId))).toMatchObject({ outcome: 'transcoded' });
      return harness.store.dir(meta.videoId);
    } finally {
      await harness.close();
    }
  })();
  [stack, source] = await Promise.all([startStack({ env: { MEDIA_KEK: KEK } }), transcoded]);
}, STACK_START_DEADLINE_MS + 120_000);

afterAll(async () => {
  await stack?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/**
 * The clear video as a new video of the stack's vault, stored before MEDIA_KEK was set: PHI in
 * meta.json. `withPreview`: and the preview a fanned-out transcode leaves (the same rung, without images).
 */
async function plaintextVideo(withPreview = false): Promise<string> {
  const videoId = newId();
  const dir = path.join(videoDir(), videoId);
  cpSync(source, dir, { recursive: true });
  if (withPreview) cpSync(path.join(source, 'hls'), path.join(dir, 'preview'), { recursive: true, filter: (f) => !/\.(jpg|vtt)$/.test(f) });
  const store = new MediaStore(videoDir());
  const original = readFileSync(path.join(dir, 'original.mp4'));
  await store.write({ ...(await new MediaStore(path.dirname(source)).read(path.basename(source))), videoId, filename: FILENAME, metadata: { title: TITLE }, size: original.length, checksum: sha256(original) });
  return videoId;
}

function cli(args: string[], script = 'dist/scripts/pulsevault.js', env: Record<string, string> = {}) {
  const p = spawnNode([script, ...args], { ...baseTestEnv(), LOG_LEVEL: 'warn', MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url, MEDIA_KEK: KEK, ...env });
  const summary = () => p.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).at(-1);
  return { ...p, done: p.exited.then((code) => ({ code, output: p.output(), summary: summary() })) };
}

const edge = async (videoId: string, rel: string, t = token(videoId), dir = 'hls') => {
  const res = await fetch(`${stack.url}/media/videos/${videoId}/${dir}/${rel}${rel.includes('?') ? '' : `?token=${t}`}`);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
};
const uriLines = (playlist: string) => playlist.split('\n').flatMap((l) => (l.startsWith('#') ? /URI="([^"]+)"/.exec(l)?.[1] ?? [] : l.trim() ? [l.trim()] : [])).filter((u) => !u.startsWith('data:'));

/**
 * What a player fetches through the edge: every media playlist of the master and every init and
 * segment they name; in `hls/`, the poster and sprite sheet too, as they were transcoded.
 */
async function playable(videoId: string, dir = 'hls'): Promise<Map<string, Buffer>> {
  const t = token(videoId, dir);
  const got = new Map<string, Buffer>();
  const master = await edge(videoId, 'master.m3u8', t, dir);
  expect(master.status).toBe(200);
  for (const playlist of uriLines(master.body.toString())) {
    const media = await edge(videoId, playlist, t, dir);
    expect(media.status, playlist).toBe(200);
    for (const uri of uriLines(media.body.toString())) {
      const file = await edge(videoId, uri, t, dir);
      expect(file.status, uri).toBe(200);
      got.set(uri.split('?')[0]!, file.body);
    }
  }
  if (dir !== 'hls') return got;
  for (const image of ['poster.jpg', 'thumbs_0_000.jpg']) {
    const served = await edge(videoId, image, t);
    expect(served.status, image).toBe(200);
    expect(served.body.equals(readFileSync(path.join(source, 'hls', image))), image).toBe(true);
  }
  return got;
}

const folderFiles = (dir: string) => (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[]).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));

/** 48-byte windows of every clear file that carries picture, sound or PHI (not the init segments: codec descriptions). */
function clearWindows(): Buffer[] {
  return folderFiles(source)
    .filter((f) => /(^original\.mp4|seg_\d+_\d+\.m4s|\.jpg)$/.test(f))
    .flatMap((f) => {
      const b = readFileSync(path.join(source, f));
      return [0.3, 0.6, 0.9].map((x) => b.subarray(Math.floor(b.length * x), Math.floor(b.length * x) + 48));
    });
}

/** Encrypted as a transcode under its key would have published it: no plaintext in any file, marks settled, the scrub content. */
async function expectFullyEncrypted(videoId: string): Promise<void> {
  const dir = path.join(videoDir(), videoId);
  const files = folderFiles(dir);
  const windows = clearWindows();
  for (const f of files) {
    const bytes = readFileSync(path.join(dir, f));
    for (const w of windows) expect(bytes.includes(w), `${f} holds clear bytes`).toBe(false);
    for (const phi of [FILENAME, TITLE]) expect(bytes.includes(Buffer.from(phi)), `${f}: ${phi}`).toBe(false);
    expect(bytes.includes(Buffer.from('JFIF')) || bytes.includes(Buffer.from('Lavc')), f).toBe(false);
    if (/init_\d+\.m4s$/.test(f)) expect(bytes.includes(Buffer.from('tenc')), f).toBe(true);
  }
  // The segments live in the generation directory only; no work directory or transitional mark is left.
  expect(files.filter((f) => f.endsWith('.m4s')).every((f) => /^(hls|preview)\//.test(f) && f.split('/')[1] === GENERATION_DIR)).toBe(true);
  expect(files.filter((f) => f.startsWith('hls/') && !f.includes('/', 4)).sort()).toEqual(
    ['240p.m3u8', 'audio.m3u8', IMAGES_SEALED_MARK, 'manifest.mpd', 'master.m3u8', 'poster.jpg', 'thumbnails.vtt', 'thumbs_0_000.jpg'].map((n) => `hls/${n}`).sort(),
  );
  expect(files).toContain(ORIGINAL_ENCRYPTED_MARK);
  for (const image of ['hls/poster.jpg', 'hls/thumbs_0_000.jpg']) expect(readFileSync(path.join(dir, image)).subarray(0, 8).toString('latin1')).toBe('PVAEAD01');
  expect(await scrubVideo(videoDir(), videoId, new Pacer(0), () => {}, keys())).toBeNull();
  const meta = await (await fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${token(videoId)}`)).json();
  expect(meta).toMatchObject({ encrypted: true });
}

describe('pulsevault encrypt: renditions and images', () => {
  it('serves the old playlists\' clear segments byte-identical through the grace while the new ones name CENC segments; then removes them: no plaintext left, scrub passes', async () => {
    const videoId = await plaintextVideo(true);
    const dir = path.join(videoDir(), videoId);
    const t = token(videoId);
    const before = await playable(videoId);
    await playable(videoId, 'preview');
    expect([...before.keys()].every((n) => !n.includes('/'))).toBe(true);
    const oldPlaylist = (await edge(videoId, '240p.m3u8', t)).body.toString();

    // A grace long enough for the checks below on a loaded machine.
    const run = cli(['encrypt', '--switch-grace-ms', '200', '--retire-grace-ms', '60000', videoId]);
    await waitFor(() => existsSync(path.join(dir, 'hls', RETIRE_MARK)) && !existsSync(path.join(dir, 'hls', '.encrypting')), 60_000, 'the playlists switched', 50);
    // During the grace: what a player that loaded the old playlist fetches is the clear bytes, through the edge.
    for (const uri of uriLines(oldPlaylist)) {
      const got = await edge(videoId, uri.split('?')[0]!, t);
      expect(got.status, uri).toBe(200);
      expect(got.body.equals(readFileSync(path.join(source, 'hls', uri.split('?')[0]!))), uri).toBe(true);
    }
    // A player loading now gets the encrypted ladder: the key tag, segments under the generation directory.
    const media = (await edge(videoId, '240p.m3u8', t)).body.toString();
    expect(media).toMatch(/^#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT="org.w3.clearkey"/m);
    const manifest = (await edge(videoId, 'manifest.mpd', t)).body.toString();
    expect(manifest).toContain(`cenc:default_KID="${videoId}"`);
    expect(manifest).toContain(`initialization="${GENERATION_DIR}/init_$RepresentationID$.m4s?token=`);
    const windows = clearWindows();
    const now = await playable(videoId);
    for (const [name, bytes] of now) {
      expect(name.startsWith(`${GENERATION_DIR}/`), name).toBe(true);
      if (name.includes('init_')) expect(bytes.includes(Buffer.from('tenc')), name).toBe(true);
      for (const w of windows) expect(bytes.includes(w), name).toBe(false);
    }
    // Honest meanwhile: clear segments are still on disk.
    expect(await (await fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${t}`)).json()).toMatchObject({ encrypted: false });

    // The preview likewise.
    for (const [name, bytes] of await playable(videoId, 'preview')) {
      expect(name.startsWith(`${GENERATION_DIR}/`), name).toBe(true);
      for (const w of windows) expect(bytes.includes(w), name).toBe(false);
    }
    expect(readdirSync(path.join(dir, 'preview')).filter((n) => n.endsWith('.m4s'))).not.toHaveLength(0);

    const done = await run.done;
    expect(done.code, done.output).toBe(0);
    expect(done.summary).toMatchObject({ encrypted: 1, retired: 1, failed: 0, busy: 0 });
    expect(done.output).toMatch(/^encrypt: 1 videos still publish their clear segments for players that loaded them; the last go in \d+ s$/m);
    expect(done.output).not.toContain(TITLE);
    for (const uri of uriLines(oldPlaylist)) expect((await edge(videoId, uri.split('?')[0]!, t)).status, uri).toBe(404);
    await expectFullyEncrypted(videoId);
    expect(readdirSync(path.join(dir, 'preview')).sort()).toEqual(['240p.m3u8', 'audio.m3u8', GENERATION_DIR, 'manifest.mpd', 'master.m3u8']);
    await playable(videoId, 'preview');
    expect(await auditEntriesOnceThere(path.join(stack.mediaRoot, 'audit'), (e) => e.action === 'video.media_encrypted' && e.videoId === videoId, 1)).toHaveLength(1);

    const again = await cli(['encrypt', '--switch-grace-ms', '0', '--all']).done;
    expect(again.code, again.output).toBe(0);
    expect(again.summary).toMatchObject({ encrypted: 0, failed: 0 });
  });

  /** Cut short between two seals: the scrub checks the image already sealed (a flipped byte is a finding) and leaves the clear one to the rerun. */
  async function expectScrubbedMidSealing(videoId: string): Promise<void> {
    const hls = path.join(videoDir(), videoId, 'hls');
    const sealed = ['poster.jpg', 'thumbs_0_000.jpg'].filter((n) => readFileSync(path.join(hls, n)).subarray(0, 8).toString('latin1') === 'PVAEAD01');
    expect(sealed).toHaveLength(1);
    expect(await scrubVideo(videoDir(), videoId, new Pacer(0), () => {}, keys())).toBeNull();
    const file = path.join(hls, sealed[0]!);
    const original = readFileSync(file);
    const flipped = Buffer.from(original);
    flipped[flipped.length - 20]! ^= 0x01;
    writeFileSync(file, flipped);
    try {
      expect(await scrubVideo(videoDir(), videoId, new Pacer(0), () => {}, keys())).toMatchObject({ problem: 'ciphertext_tampered', detail: expect.stringContaining(`hls/${sealed[0]}`) });
    } finally {
      writeFileSync(file, original);
    }
  }

  it.each(MEDIA_STEPS.map((s) => [s]))('killed after %s: the video still plays through the edge, the rerun finishes', async (step) => {
    const videoId = await plaintextVideo();
    const doomed = await cli(['--switch-grace-ms', '0', '--retire-grace-ms', '0', videoId], 'test/helpers/crashing-encrypt.mjs', { ENCRYPT_CRASH_AT: step }).done;
    expect(doomed.code, doomed.output).toBeNull();
    await stack.redis.client().del(metaLockKey(videoId));
    await playable(videoId);
    if (step === 'after-image-sealed') await expectScrubbedMidSealing(videoId);
    const rerun = await cli(['encrypt', '--switch-grace-ms', '0', '--retire-grace-ms', '0', videoId]).done;
    expect(rerun.code, rerun.output).toBe(0);
    expect(rerun.summary).toMatchObject({ failed: 0, busy: 0 });
    await playable(videoId);
    await expectFullyEncrypted(videoId);
    expect(existsSync(path.join(videoDir(), videoId, 'hls', IMAGES_SEALING_MARK))).toBe(false);
  });

  it('a transcode under way when the clear segments are due: left for a later run (busy), which removes them', async () => {
    const videoId = await plaintextVideo();
    const hls = path.join(videoDir(), videoId, 'hls');
    // Switched, with the clear segments due at once.
    const doomed = await cli(['--switch-grace-ms', '0', '--retire-grace-ms', '0', videoId], 'test/helpers/crashing-encrypt.mjs', { ENCRYPT_CRASH_AT: 'after-playlists' }).done;
    expect(doomed.code, doomed.output).toBeNull();
    await stack.redis.client().del(metaLockKey(videoId));
    const lease = `${leaseKey(videoId)}:preview`;
    await stack.redis.client().set(lease, 'another-replica', 'PX', 60_000);
    const waiting = await cli(['encrypt', '--switch-grace-ms', '0', videoId]).done;
    expect(waiting.code, waiting.output).toBe(1);
    expect(waiting.summary).toMatchObject({ busy: 1 });
    expect(readdirSync(hls).filter((n) => n.startsWith('seg_'))).not.toHaveLength(0);
    expect(existsSync(path.join(hls, RETIRE_MARK))).toBe(true);
    await stack.redis.client().del(lease);
    const rerun = await cli(['encrypt', '--switch-grace-ms', '0', videoId]).done;
    expect(rerun.code, rerun.output).toBe(0);
    await expectFullyEncrypted(videoId);
  });

  it('hls.js keeps playing a clear playlist it loaded before the switch; hls.js and dash.js play the migrated video with the key, through the edge', async () => {
    const videoId = await plaintextVideo();
    const dir = path.join(videoDir(), videoId);
    const browser = await launchChromium();
    try {
      const page = await playerPage(browser, stack.url);
      const t = token(videoId);
      const base = `${stack.url}/media/videos/${videoId}/hls`;
      const urls = { master: `${base}/master.m3u8?token=${t}`, mpd: `${base}/manifest.mpd?token=${t}`, license: `${base}/clearkey?token=${t}` };
      // A short buffer: the player fetches the later segments after the switch, by the names it loaded.
      await page.evaluate(`(async ({ master, license }) => {
        const video = document.createElement('video');
        video.muted = true;
        document.body.append(video);
        window.early = { video, error: null };
        const hls = new Hls({ maxBufferLength: 1, maxMaxBufferLength: 2, emeEnabled: true, drmSystems: { 'org.w3.clearkey': { licenseUrl: license } } });
        hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.early.error = d.details; });
        hls.loadSource(master);
        hls.attachMedia(video);
        await video.play();
        while (video.currentTime < 0.5 && !window.early.error) await new Promise((r) => setTimeout(r, 50));
        video.pause();
      })(${JSON.stringify(urls)})`);
      const run = cli(['encrypt', '--switch-grace-ms', '200', '--retire-grace-ms', '60000', videoId]);
      await waitFor(() => existsSync(path.join(dir, 'hls', RETIRE_MARK)) && !existsSync(path.join(dir, 'hls', '.encrypting')), 60_000, 'the playlists switched', 50);
      const early = (await page.evaluate(`(async () => {
        const { video } = window.early;
        const switched = performance.now();
        await video.play();
        const end = Date.now() + 60000;
        while (!window.early.error && !video.ended && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
        // The segments it fetched after the switch, by the clear names of the playlist it had loaded.
        const clearAfter = performance.getEntriesByType('resource').filter((e) => e.startTime > switched && new URL(e.name).pathname.includes('/hls/seg_')).length;
        return { error: window.early.error, currentTime: video.currentTime, ended: video.ended, clearAfter };
      })()`)) as { error: string | null; currentTime: number; ended: boolean; clearAfter: number };
      expect(early).toMatchObject({ error: null, ended: true });
      expect(early.clearAfter).toBeGreaterThan(0);
      expect(early.currentTime).toBeGreaterThan(SECONDS - 1);

      for (const kind of ['hls', 'dash'] as const) {
        const played = (await page.evaluate(`(${PLAY_ENCRYPTED})(${JSON.stringify({ kind, ...urls })})`)) as { error: string | null; currentTime: number; width: number };
        expect(played, kind).toMatchObject({ error: null, width: 320 });
        expect(played.currentTime, kind).toBeGreaterThanOrEqual(1);
      }
      run.child.kill('SIGKILL'); // the rest of the grace is the retirement, tested above
      await run.done;
    } finally {
      await browser.close();
    }
  });
});
