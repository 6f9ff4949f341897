/**
 * hls.js and dash.js in headless Chromium play a fanned-out video (10 s in 4 s
 * chunks) across both chunk boundaries: one continuous buffered range, no stall.
 * The published directory is served as it is over plain HTTP (the signed-URL
 * path is the console test's subject; here it is the joined media).
 */
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleFiles } from '../../services/console/route.js';
import { checkEncoders } from '../../shared/transcode/transcoder.js';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';
import { runFannedOut } from '../helpers/fanout.js';
import { makeClip } from '../helpers/media.js';
import { startTranscoder, transcodeJob, type TranscoderHarness } from '../helpers/transcoder.js';
import { addVideo } from '../helpers/videos.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'pv-fanout-play-'));
const TYPES: Record<string, string> = { '.m3u8': 'application/vnd.apple.mpegurl', '.mpd': 'application/dash+xml', '.m4s': 'video/iso.segment', '.js': 'text/javascript', '.html': 'text/html' };

/**
 * In the page: buffer the whole stream first (so a stall while playing can only be
 * a hole in the media, never a slow fetch on a busy machine), then play from
 * `from` to `to`, counting `waiting` events after playback began.
 */
const PAGE = `<!doctype html><meta charset="utf-8"><title>fan-out playback</title>
<script src="/vendor/hls.min.js"></script><script src="/vendor/dash.all.min.js"></script>
<script>
async function playAcross(kind, url, from, to) {
  const video = document.createElement('video');
  video.muted = true;
  document.body.append(video);
  let error = null, waiting = 0, playing = false;
  video.addEventListener('playing', () => { playing = true; });
  video.addEventListener('waiting', () => { if (playing) waiting++; });
  let player;
  if (kind === 'hls') {
    player = new Hls();
    player.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) error = d.details; });
    player.loadSource(url);
    player.attachMedia(video);
  } else {
    player = dashjs.MediaPlayer().create();
    player.on('error', (e) => { error = (e.error && e.error.message) || 'dash.js error'; });
    player.initialize(video, url, false);
  }
  const until = async (ok, ms, what) => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (error) throw new Error(error);
      if (Date.now() > end) throw new Error('timed out waiting for ' + what);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const ranges = () => Array.from({ length: video.buffered.length }, (_, i) => [video.buffered.start(i), video.buffered.end(i)]);
  await until(() => video.buffered.length > 0 && video.buffered.end(video.buffered.length - 1) >= to + 0.5, 60000, 'the stream to be buffered');
  video.currentTime = from;
  await video.play();
  await until(() => video.currentTime >= to, 60000, 'playback to reach ' + to + ' s');
  const report = { error, ranges: ranges(), waiting, reached: video.currentTime };
  player.destroy();
  return report;
}
</script>`;

let harness: TranscoderHarness;
let server: Server;
let origin: string;
let browser: TestBrowser;
let page: Page;

beforeAll(async () => {
  harness = await startTranscoder(tmp, { RENDITIONS: '240p,360p', TRANSCODE_CHUNK_SEGMENTS: '2' });
  const clip = await makeClip(path.join(tmp, 'clip.mp4'), { seconds: 10, width: 640, height: 360 });
  const video = await addVideo(harness.store, clip);
  const results = await runFannedOut(harness.deps, await checkEncoders(harness.config), transcodeJob(video.videoId));
  expect(results.get(video.videoId)).toEqual({ outcome: 'fanned_out', chunks: 3 });
  const hlsDir = path.join(harness.store.dir(video.videoId), 'hls');
  const vendor = consoleFiles(process.cwd());

  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const file =
      url.pathname === '/'
        ? null
        : url.pathname.startsWith('/vendor/')
          ? vendor.get(url.pathname.slice(1))
          : url.pathname.startsWith('/hls/') && !url.pathname.slice(5).includes('/')
            ? path.join(hlsDir, url.pathname.slice(5))
            : undefined;
    if (file === null) return res.writeHead(200, { 'Content-Type': 'text/html' }).end(PAGE);
    if (!file || !statSync(file, { throwIfNoEntry: false })?.isFile()) return res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  browser = await launchChromium();
  page = await browser.context.newPage();
  await page.goto(`${origin}/`);
  expect(readFileSync(path.join(hlsDir, 'master.m3u8'), 'utf8')).toContain('#EXT-X-STREAM-INF');
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
  await harness?.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface PlayReport {
  error: string | null;
  ranges: [number, number][];
  waiting: number;
  reached: number;
}

describe('playing across chunk boundaries (4 s and 8 s)', () => {
  for (const [kind, uri] of [
    ['hls', 'master.m3u8'],
    ['dash', 'manifest.mpd'],
  ] as const) {
    it(`${kind === 'hls' ? 'hls.js' : 'dash.js'}: one continuous buffered range, no stall from 2.5 s to 9 s`, async () => {
      const report = (await page.evaluate(`playAcross(${JSON.stringify(kind)}, ${JSON.stringify(`${origin}/hls/${uri}`)}, 2.5, 9)`)) as PlayReport;
      expect(report.error).toBeNull();
      // A gap or overlap at a chunk boundary would split the buffer in two (or stall playback there).
      expect(report.ranges).toHaveLength(1);
      expect(report.ranges[0]![0]).toBeLessThanOrEqual(0.1);
      expect(report.ranges[0]![1]).toBeGreaterThanOrEqual(9.5);
      expect(report.waiting).toBe(0);
      expect(report.reached).toBeGreaterThanOrEqual(9);
    });
  }
});
