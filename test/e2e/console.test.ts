/**
 * Real clients end to end, against the local stack as `npm start` runs it
 * (NODE_ENV=development, so with the dev token it prints):
 * the web console in headless Chromium uploads a clip with tus-js-client,
 * finalizes it and follows the transcode, lists it in its library (poster,
 * title, duration, status, renditions) and shares a signed link; hls.js plays the signed master and
 * dash.js the signed manifest, each fetching segments of two rungs through the
 * token; an expired token plays nothing; ffprobe reads the signed master over
 * HTTP; an upload paused and reloaded resumes where it stopped.
 *
 * The stack has a MEDIA_KEK: the clip is stored encrypted and its renditions are CENC, so both
 * players fetch the content key from the key URL.
 *
 * One stack, one browser and one clip (transcoded once) for the whole file.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Page, Request, Route } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VideoMeta } from '../../shared/video/store.js';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';
import { makeClip } from '../helpers/media.js';
import { startStack, type TestStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const ARTIFACTS = path.resolve('test/artifacts');
/** Chromium and ffmpeg share two cores with other test files: generous, polled deadlines. */
const UPLOAD_DEADLINE = 90_000;
const TRANSCODE_DEADLINE = 300_000;
const PLAY_DEADLINE = 90_000;
const RESUME_FILE_BYTES = 24 * 1024 * 1024; // the console uploads 16 MiB chunks: two PATCHes

interface Seen {
  url: URL;
  status: number;
  headers: Record<string, string>;
  request: Request;
  /** Playlist and manifest bodies, as the player received them. */
  body: Promise<string> | null;
}

/** Minimal shapes of what the page exposes (the test is type-checked without the DOM library). */
interface PageGlobals {
  document: { createElement(tag: 'video'): PageVideo; body: { append(node: unknown): void } };
  Hls: {
    new (): { on(event: string, cb: (event: string, data: { fatal: boolean; details: string; response?: { code: number } }) => void): void; loadSource(url: string): void; attachMedia(v: PageVideo): void; destroy(): void };
    Events: { ERROR: string; FRAG_BUFFERED: string };
  };
  dashjs: { MediaPlayer(): { create(): { on(event: string, cb: (e: { error?: { code?: number; message?: string } }) => void): void; initialize(v: PageVideo, url: string, autoPlay: boolean): void; destroy(): void } } };
}
interface PageVideo {
  muted: boolean;
  currentTime: number;
  paused: boolean;
  readyState: number;
  networkState: number;
  error: { code: number } | null;
  buffered: { length: number; start(i: number): number; end(i: number): number };
}

describe('web console and real players, end to end', () => {
  let stack: TestStack;
  let browser: TestBrowser;
  let page: Page;
  let devToken: string;
  let workDir: string;
  let clip: string;
  let videoId: string;
  let seen: Seen[] = [];

  const meta = () => JSON.parse(readFileSync(path.join(stack.mediaRoot, 'videos', videoId, 'meta.json'), 'utf8')) as VideoMeta;
  const videoUrl = (rel: string) => `/media/videos/${videoId}/${rel}`;
  const text = (selector: string) => page.locator(selector).textContent();
  const currentTime = () => page.locator('#video-element').evaluate((v) => (v as unknown as PageVideo).currentTime);
  /** What the player is doing, for a failure's message: a stalled playback is otherwise a bare timeout. */
  const playerState = async () => {
    const video = await page.locator('#video-element').evaluate((element) => {
      const v = element as unknown as PageVideo;
      const buffered = Array.from({ length: v.buffered.length }, (_, i) => `${v.buffered.start(i).toFixed(2)}-${v.buffered.end(i).toFixed(2)}`);
      return { currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, networkState: v.networkState, error: v.error?.code ?? null, buffered };
    });
    return `video ${JSON.stringify(video)}, status "${await text('#player-status')}", alert "${await text('#alert')}"`;
  };

  async function sign(rel: string, expiresIn?: number): Promise<{ url: string; expiresAt: string }> {
    const res = await fetch(`${stack.url}/media/sign`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${devToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ videoId, path: rel, ...(expiresIn ? { expiresIn } : {}) }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const answer = (await res.json()) as { url: string; expiresAt: string };
    return { ...answer, url: new URL(answer.url, stack.url).href };
  }

  beforeAll(async () => {
    workDir = mkdtempSync(path.join(tmpdir(), 'pv-e2e-'));
    mkdirSync(ARTIFACTS, { recursive: true });
    // 640x360 with audio: the ladder 240p,360p gives two video rungs (never upscaled).
    [stack, clip] = await Promise.all([
      // A KEK: the original is stored encrypted and the renditions CENC-encrypted, so the players fetch the content key (the other e2e files play clear videos).
      startStack({ env: { NODE_ENV: 'development', RENDITIONS: '240p,360p', TOKEN_CLOCK_SKEW_SECONDS: '0', LOG_LEVEL: 'warn', MEDIA_KEK: `e2e:${randomBytes(32).toString('base64')}` } }),
      makeClip(path.join(workDir, 'clip.mp4'), { seconds: 6, width: 640, height: 360 }),
    ]);
    devToken = await waitFor(() => /^PULSEVAULT_DEV_TOKEN=(\S+)$/m.exec(stack.output())?.[1], 15_000, 'the dev token on the stack output');
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on('response', (r) => {
      const url = new URL(r.url());
      const manifest = /\.(m3u8|mpd)$/.test(url.pathname) && r.status() === 200;
      seen.push({ url, status: r.status(), headers: r.headers(), request: r.request(), body: manifest ? r.text() : null });
    });
    await page.goto(`${stack.url}/console/`);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('signs in with the dev token the local stack printed', async () => {
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.getByRole('heading', { name: 'Upload a video' }).isHidden()).toBe(true);
    await page.getByLabel('Access token (JWT)').fill(devToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Upload a video' }).waitFor();
    expect(await text('#identity')).toContain('uploader, viewer, admin');
    // The token stays in this tab (sessionStorage), never in localStorage.
    expect(await page.evaluate('sessionStorage.getItem("pulsevault.token")')).toBe(devToken);
    expect(await page.evaluate('JSON.stringify(localStorage)')).not.toContain(devToken);
  });

  it('uploads a clip through the console, reaches 100 %, finalizes and follows the transcode to `transcoded`', async () => {
    seen = [];
    await page.getByLabel('Video file').setInputFiles(clip);
    await page.getByLabel(/^Title \(optional/).fill('End-to-end clip');
    // Every figure the transcode meter shows, recorded in the page (a poll from here could miss one).
    await page.evaluate(`{
      const percent = document.querySelector('#transcode-percent');
      window.percentLog = [];
      new MutationObserver(() => window.percentLog.push(percent.value)).observe(percent, { childList: true, characterData: true, subtree: true });
    }`);
    await page.getByRole('button', { name: 'Upload', exact: true }).click();

    await waitFor(async () => (await text('#upload-percent')) === '100 %', UPLOAD_DEADLINE, 'the upload progress bar to reach 100 %', 200);
    expect(await page.locator('#upload-progress').evaluate((p) => (p as unknown as { value: number }).value)).toBe(100);

    // tus creation and finalize both carried the Bearer token.
    const creation = seen.find((s) => s.request.method() === 'POST' && s.url.pathname === '/uploads');
    expect(creation?.status).toBe(201);
    expect(creation!.request.headers().authorization).toBe(`Bearer ${devToken}`);
    const finalized = await waitFor(() => seen.find((s) => s.url.pathname === '/uploads/finalize'), UPLOAD_DEADLINE, 'finalize to answer', 200);
    expect(finalized.status).toBe(200);
    expect(finalized.request.headers().authorization).toBe(`Bearer ${devToken}`);

    videoId = (await page.getByLabel('Video ID').inputValue()).trim();
    expect(videoId).toMatch(/^[0-9a-f-]{36}$/);
    await waitFor(async () => (await text('#video-status')) === 'transcoded', TRANSCODE_DEADLINE, 'the console to show `transcoded`', 500);
    expect(meta().status).toBe('transcoded');
    expect(await text('#transcode-percent')).toBe('100 %');
    // From finalize on the meter works (indeterminate, then filling): it never sat at a "0 %" that meant nothing.
    const percents = (await page.evaluate('window.percentLog')) as string[];
    expect(percents.at(-1)).toBe('100 %');
    expect(percents).not.toContain('0 %');
    expect(await text('#video-title')).toBe('End-to-end clip');
    expect(await text('#video-duration')).toBe('0:06');
    // Status came from the metadata function through signed URLs only.
    const polls = seen.filter((s) => s.url.pathname === videoUrl('metadata'));
    expect(polls.length).toBeGreaterThan(0);
    for (const p of polls) expect(p.url.searchParams.get('token'), p.url.href).toBeTruthy();
    expect(await page.getByRole('button', { name: /Play HLS/ }).isEnabled()).toBe(true);
  }, TRANSCODE_DEADLINE + 2 * UPLOAD_DEADLINE);

  /**
   * Segments of each video rung, as the player's own manifest responses name them:
   * pathname of a media segment → the height of its rung.
   */
  async function hlsSegmentRungs(): Promise<Map<string, number>> {
    const master = seen.find((s) => s.url.pathname === videoUrl(meta().outputs!.hlsMaster!) && s.body)!;
    const variants = new Map<string, number>();
    const lines = (await master.body!).split(/\r?\n/);
    lines.forEach((line, i) => {
      const height = /^#EXT-X-STREAM-INF:.*RESOLUTION=\d+x(\d+)/.exec(line)?.[1];
      if (height) variants.set(new URL(lines[i + 1]!.trim(), master.url).pathname, Number(height));
    });
    expect(variants.size).toBeGreaterThanOrEqual(2);
    const segments = new Map<string, number>();
    for (const s of seen) {
      const height = variants.get(s.url.pathname);
      if (height === undefined || !s.body) continue;
      for (const line of (await s.body).split(/\r?\n/)) {
        if (line.trim() && !line.startsWith('#')) segments.set(new URL(line.trim(), s.url).pathname, height);
      }
    }
    return segments;
  }

  async function dashSegmentRungs(): Promise<Map<string, number>> {
    const manifest = seen.find((s) => s.url.pathname === videoUrl(meta().outputs!.dashManifest!) && s.body)!;
    const xml = await manifest.body!;
    const templates = [...xml.matchAll(/\bmedia="([^"]+)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&').split('?')[0]!);
    const rungs = [...xml.matchAll(/<Representation\b([^>]*)>/g)]
      .map((m) => ({ id: /\bid="([^"]+)"/.exec(m[1]!)?.[1], height: /\bheight="(\d+)"/.exec(m[1]!)?.[1] }))
      .filter((r): r is { id: string; height: string } => Boolean(r.id && r.height));
    expect(rungs.length).toBeGreaterThanOrEqual(2);
    const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const segments = new Map<string, number>();
    for (const s of seen) {
      if (!s.url.pathname.startsWith(videoUrl(''))) continue;
      const name = path.posix.basename(s.url.pathname);
      for (const rung of rungs) {
        const match = templates.some((t) => {
          const pattern = escape(path.posix.basename(t)).replace(/\\\$RepresentationID\\\$/g, escape(rung.id)).replace(/\\\$(Number|Time)(%0\d+d)?\\\$/g, '\\d+');
          return new RegExp(`^${pattern}$`).test(name);
        });
        if (match) segments.set(s.url.pathname, Number(rung.height));
      }
    }
    return segments;
  }

  /**
   * Start a player from the console, force a switch to a rung it has not fetched
   * yet, play past 2 s; then every segment came through the token with 200, from
   * at least two rungs.
   */
  async function playAndSwitch(button: RegExp, segmentRungs: () => Promise<Map<string, number>>): Promise<void> {
    seen = [];
    await page.getByRole('button', { name: button }).click();
    const fetchedRungs = async () => {
      const rungs = await segmentRungs();
      return new Set(seen.filter((s) => rungs.has(s.url.pathname) && s.status === 200).map((s) => rungs.get(s.url.pathname)!));
    };
    const first = await waitFor(async () => [...(await fetchedRungs())][0], PLAY_DEADLINE, 'a first media segment', 200);
    await waitFor(() => page.getByLabel('Rendition').isEnabled(), PLAY_DEADLINE, 'the rendition list', 200);
    const options = await page.getByLabel('Rendition').locator('option').allTextContents();
    // Labelled by the rendition names the metadata lists (240p), not by picture height (234).
    expect(options).toEqual(['Auto', ...meta().renditions]);
    const firstLabel = meta().ladder!.find((r) => r.height === first)!.name;
    const other = options.find((o) => o !== 'Auto' && o !== firstLabel);
    expect(other, `renditions offered: ${options.join(', ')}`).toBeDefined();
    await page.getByLabel('Rendition').selectOption({ label: other! });

    await waitFor(async () => (await fetchedRungs()).size >= 2, PLAY_DEADLINE, `segments of the ${other} rung`, 200);
    await waitFor(async () => (await currentTime()) > 2, PLAY_DEADLINE, 'playback to pass 2 s', 200).catch(async (err: Error) => {
      throw new Error(`${err.message}; ${await playerState()}`);
    });

    const rungs = await segmentRungs();
    const media = seen.filter((s) => s.url.pathname.startsWith(videoUrl('')) && s.url.pathname !== videoUrl('metadata'));
    expect(media.length).toBeGreaterThan(0);
    for (const s of media) {
      expect(s.url.searchParams.get('token'), s.url.href).toBeTruthy();
      expect(s.status, s.url.pathname).toBe(200);
    }
    expect([...(await fetchedRungs())].sort((a, b) => a - b)).toEqual([...new Set(rungs.values())].sort((a, b) => a - b));
    // The renditions are encrypted: the player got the content key from the key URL beside the playlist.
    const keyFetches = media.filter((s) => s.url.pathname === videoUrl('hls/clearkey'));
    expect(keyFetches.length).toBeGreaterThan(0);
    expect(keyFetches.every((s) => s.request.method() === 'POST' && s.headers['cache-control'] === 'no-store')).toBe(true);
    expect(await page.locator('#alert').isHidden()).toBe(true);
  }

  it('plays the signed HLS master in hls.js past 2 s, fetching segments of two rungs through the token', async () => {
    await playAndSwitch(/Play HLS/, hlsSegmentRungs);
    expect(await text('#player-status')).toMatch(/^Playing HLS at \d+p\.$/);
  }, 3 * PLAY_DEADLINE);

  it('plays the signed DASH manifest in dash.js past 2 s, fetching segments of two rungs through the token', async () => {
    await playAndSwitch(/Play DASH/, dashSegmentRungs);
    expect(await text('#player-status')).toMatch(/^Playing DASH at \d+p\.$/);
    const shot = path.join(ARTIFACTS, 'console-after-playback.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(10_000);
  }, 3 * PLAY_DEADLINE);

  it('shows seek thumbnails: a tile of a sprite sheet from thumbnails.vtt, fetched through the master token', async () => {
    seen = [];
    await waitFor(() => page.locator('#scrub').isEnabled(), PLAY_DEADLINE, 'the seek bar', 200);
    await page.evaluate(`(() => { const s = document.getElementById('scrub'); s.value = '3'; s.dispatchEvent(new Event('input')); })()`);
    await page.locator('#scrub-thumb').waitFor({ state: 'visible' });
    const style = (await page.locator('#scrub-thumb').getAttribute('style')) ?? '';
    // The tile for 3 s: the second of one row of 160x90 tiles (6 s → 3 thumbnails, one per 2 s segment).
    expect(style).toMatch(/thumbs_0_000\.jpg\?token=/);
    expect(style).toContain('background-position: -160px 0px');
    const sheet = await waitFor(() => seen.find((x) => x.url.pathname === videoUrl('hls/thumbs_0_000.jpg')), PLAY_DEADLINE, 'the sprite sheet', 200);
    expect(sheet.status).toBe(200);
    expect(sheet.headers['content-type']).toBe('image/jpeg');
    // The index opens with the same token (scope hls/), and its cues carry it, as a standard
    // thumbnail plug-in needs: each cue's URL, resolved against the index and taken as it is, opens.
    const token = sheet.url.searchParams.get('token')!;
    const vttUrl = `${stack.url}${videoUrl('hls/thumbnails.vtt')}?token=${token}`;
    const vtt = await fetch(vttUrl);
    expect(vtt.status).toBe(200);
    expect(vtt.headers.get('content-type')).toMatch(/^text\/vtt/);
    const cues = [...(await vtt.text()).matchAll(/^(\S+)#xywh=(\d+,\d+,\d+,\d+)$/gm)];
    expect(cues.map((c) => c[2])).toContain('160,0,160,90');
    for (const [, cueUrl] of cues) {
      const image = await fetch(new URL(cueUrl!, vttUrl));
      expect(image.status, cueUrl).toBe(200);
      expect(image.headers.get('content-type')).toBe('image/jpeg');
      await image.arrayBuffer();
    }
  }, 2 * PLAY_DEADLINE);

  it('lists the video in the library with its poster, title, duration, status and renditions, and opens it from there', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    const card = page.locator(`#library-list .card[data-video-id="${videoId}"]`);
    await card.waitFor({ timeout: PLAY_DEADLINE });
    // The card of an earlier listing (taken while the video was queued) may still be shown until the refresh lands.
    await waitFor(async () => (await card.locator('.badge').textContent()) === 'transcoded', PLAY_DEADLINE, 'the refreshed card', 100);
    expect(await card.locator('.card-title').textContent()).toBe('End-to-end clip');
    expect(await card.locator('.duration').textContent()).toBe('0:06');
    expect(await card.locator('.badge').textContent()).toBe('transcoded');
    expect(await card.locator('.card-facts').textContent()).toContain('240p · 360p');
    // The generated poster, through a signed URL, really decoded.
    const poster = card.locator('.poster img');
    await waitFor(async () => (await poster.evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth)) > 0, PLAY_DEADLINE, 'the poster to load', 200);
    expect(new URL((await poster.getAttribute('src'))!, stack.url).searchParams.get('token')).toBeTruthy();

    await page.getByRole('button', { name: '← All videos' }).click();
    expect(await page.locator('#video').isHidden()).toBe(true);
    await card.click();
    await waitFor(async () => (await text('#video-status')) === 'transcoded', PLAY_DEADLINE, 'the detail view of the listed video', 200);
    expect(await text('#video-title')).toBe('End-to-end clip');
    expect(await page.getByLabel('Video ID').inputValue()).toBe(videoId);
  }, 2 * PLAY_DEADLINE);

  it('makes a share link: a signed URL of the master that plays, with its expiry', async () => {
    await waitFor(() => page.getByRole('button', { name: /Play HLS/ }).isEnabled(), PLAY_DEADLINE, 'the player', 200);
    const actions = page.getByRole('toolbar', { name: 'Video actions' });
    await actions.getByRole('button', { name: 'Share link' }).click();
    await page.locator('#share-box').waitFor({ state: 'visible' });
    const shared = new URL(await page.getByLabel('Signed link').inputValue());
    expect(shared.pathname).toBe(videoUrl(meta().outputs!.hlsMaster!));
    expect(shared.searchParams.get('token')).toBeTruthy();
    expect(await text('#share-expiry')).toMatch(/^Opens until .+ \(\d+ min\)/);
    const res = await fetch(shared);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('#EXTM3U');
  }, 2 * PLAY_DEADLINE);

  it('lays the page out for a phone (390×844): the header on one line, the player on the first screen', async () => {
    const desktop = path.join(ARTIFACTS, 'console-desktop.png');
    await page.screenshot({ path: desktop, fullPage: true });
    expect(statSync(desktop).size).toBeGreaterThan(10_000);
    const desktopSize = page.viewportSize();
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      const header = (await page.locator('header.bar').boundingBox())!;
      expect(header.height).toBeLessThan(64);
      const player = (await page.locator('#video-element').boundingBox())!;
      expect(player.y + player.height).toBeLessThan(844);
      expect(player.width).toBeGreaterThan(330);
      // Nothing wider than the screen.
      expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
      const phone = path.join(ARTIFACTS, 'console-phone.png');
      await page.screenshot({ path: phone, fullPage: true });
      expect(statSync(phone).size).toBeGreaterThan(10_000);
    } finally {
      if (desktopSize) await page.setViewportSize(desktopSize);
    }
  }, PLAY_DEADLINE);

  it('an expired token: hls.js and dash.js fail with 403 and nothing is served', async () => {
    const { hlsMaster, dashManifest } = meta().outputs!;
    const [hlsShort, dashShort, hlsLong] = await Promise.all([sign(hlsMaster!, 1), sign(dashManifest!, 1), sign(hlsMaster!)]);
    // Wait (by polling, not sleeping) until the 1 s tokens are refused; the same path with a live token still opens.
    await waitFor(async () => (await fetch(hlsShort.url)).status === 403 && (await fetch(dashShort.url)).status === 403, 30_000, 'the 1 s tokens to expire', 250);
    expect((await fetch(hlsLong.url)).status).toBe(200);
    for (const url of [hlsShort.url, dashShort.url]) {
      const body = await (await fetch(url)).text();
      expect(body).not.toContain('#EXTM3U');
      expect(body).not.toContain('<MPD');
    }

    seen = [];
    const hls = await page.evaluate(async (url) => {
      const g = globalThis as unknown as PageGlobals;
      const video = g.document.createElement('video');
      video.muted = true;
      g.document.body.append(video);
      return new Promise<{ code: number | null; details: string; buffered: number }>((resolve) => {
        const player = new g.Hls();
        player.on(g.Hls.Events.FRAG_BUFFERED, () => resolve({ code: null, details: 'a fragment was buffered', buffered: video.buffered.length }));
        player.on(g.Hls.Events.ERROR, (_e, data) => {
          if (!data.fatal) return;
          player.destroy();
          resolve({ code: data.response?.code ?? null, details: data.details, buffered: video.buffered.length });
        });
        player.loadSource(url);
        player.attachMedia(video);
      });
    }, hlsShort.url);
    expect(hls).toEqual({ code: 403, details: 'manifestLoadError', buffered: 0 });

    const dash = await page.evaluate(async (url) => {
      const g = globalThis as unknown as PageGlobals;
      const video = g.document.createElement('video');
      video.muted = true;
      g.document.body.append(video);
      return new Promise<{ code: number | null; message: string; buffered: number }>((resolve) => {
        const player = g.dashjs.MediaPlayer().create();
        player.on('error', (e) => {
          player.destroy();
          resolve({ code: e.error?.code ?? null, message: e.error?.message ?? '', buffered: video.buffered.length });
        });
        player.initialize(video, url, true);
      });
    }, dashShort.url);
    expect(dash.buffered).toBe(0);
    expect(dash.message).toMatch(/manifest/i);

    // The players asked for the two manifests only, and got 403 each time: no playlist, no segment.
    const touched = seen.filter((s) => s.url.pathname.startsWith(videoUrl('')));
    expect(new Set(touched.map((s) => s.url.pathname))).toEqual(new Set([videoUrl(hlsMaster!), videoUrl(dashManifest!)]));
    for (const s of touched) expect(s.status, s.url.href).toBe(403);
  });

  it('ffprobe reads the signed master URL over HTTP: both rungs and the audio, the whole duration', async () => {
    const { url } = await sign(meta().outputs!.hlsMaster!);
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,height:format=duration', '-of', 'json', url], { timeout: 120_000 });
    const probed = JSON.parse(stdout) as { streams: { codec_type: string; height?: number }[]; format: { duration: string } };
    const heights = [...new Set(probed.streams.filter((s) => s.codec_type === 'video').map((s) => s.height!))].sort((a, b) => a - b);
    // The same rungs the master declares (240p of a 16:9 source is 416x234).
    const master = await (await fetch(url)).text();
    const declared = [...master.matchAll(/RESOLUTION=\d+x(\d+)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
    expect(heights).toEqual(declared);
    expect(heights).toHaveLength(2);
    expect(heights.at(-1)).toBe(360);
    expect(probed.streams.some((s) => s.codec_type === 'audio')).toBe(true);
    expect(Number(probed.format.duration)).toBeGreaterThan(5);
    expect(Number(probed.format.duration)).toBeLessThan(7);
  });

  it('resumes an upload after a page reload from where it stopped (tus fingerprint, no file name stored)', async () => {
    const file = path.join(workDir, 'resume-test.bin');
    writeFileSync(file, randomBytes(RESUME_FILE_BYTES));
    seen = [];
    // Hold the second chunk's PATCH so the upload is mid-way, for certain, when paused.
    let held: Route | null = null;
    await page.route('**/uploads/*', async (route) => {
      if (route.request().method() === 'PATCH' && route.request().headers()['upload-offset'] !== '0') {
        held = route;
        return;
      }
      await route.continue();
    });
    await page.getByLabel('Video file').setInputFiles(file);
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await waitFor(() => held, UPLOAD_DEADLINE, 'the second chunk to start', 100);
    await page.getByRole('button', { name: 'Pause' }).click();
    expect(await text('#upload-status')).toBe('Paused.');
    // Fail the held PATCH before lifting the interception (unrouting first would let it through).
    await (held as Route | null)?.abort().catch(() => {});
    await page.unroute('**/uploads/*');

    const creation = seen.find((s) => s.request.method() === 'POST' && s.url.pathname === '/uploads')!;
    const uploadPath = new URL(creation.headers.location!, creation.url).pathname;
    const head = await fetch(`${stack.url}${uploadPath}`, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${devToken}` } });
    const stored = Number(head.headers.get('upload-offset'));
    expect(stored).toBeGreaterThan(0);
    expect(stored).toBeLessThan(RESUME_FILE_BYTES);
    const remembered = (await page.evaluate('JSON.stringify(localStorage)')) as string;
    expect(remembered).toContain(uploadPath);
    expect(remembered).not.toContain('resume-test');

    await page.reload();
    await page.getByRole('heading', { name: 'Upload a video' }).waitFor(); // still signed in (sessionStorage survives a reload)
    seen = [];
    await page.getByLabel('Video file').setInputFiles(file);
    // Every status the console shows, recorded in the page: the resume can pass through "Resuming…"
    // faster than a read from here, so reading the element once would race it.
    await page.evaluate(`{
      const status = document.querySelector('#upload-status');
      window.statusLog = [status.textContent];
      new MutationObserver(() => window.statusLog.push(status.textContent)).observe(status, { childList: true, characterData: true, subtree: true });
    }`);
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await waitFor(async () => ((await page.evaluate('window.statusLog')) as string[]).includes('Resuming an unfinished upload of this file…'), UPLOAD_DEADLINE, 'the console to say it resumes', 100);
    await waitFor(async () => (await text('#upload-percent')) === '100 %', UPLOAD_DEADLINE, 'the resumed upload to reach 100 %', 200);
    // The bar fills as bytes leave; finalize is called only once the last PATCH was answered.
    await waitFor(() => seen.find((s) => s.url.pathname === '/uploads/finalize'), UPLOAD_DEADLINE, 'finalize to be called', 200);

    expect(seen.filter((s) => s.request.method() === 'POST' && s.url.pathname === '/uploads')).toEqual([]);
    // tus-js-client asked the server where it stands (HEAD) and went on from there, past the first chunk.
    const asked = seen.find((s) => s.request.method() === 'HEAD' && s.url.pathname === uploadPath);
    expect(asked?.status).toBe(200);
    const resumedAt = Number(asked!.headers['upload-offset']);
    expect(resumedAt).toBeGreaterThanOrEqual(stored);
    const patches = seen.filter((s) => s.request.method() === 'PATCH' && s.url.pathname === uploadPath);
    expect(Number(patches[0]!.request.headers()['upload-offset'])).toBe(resumedAt);
    expect(patches.every((p) => p.status === 204)).toBe(true);
    // Random bytes are no video: finalize refuses them and the console says so.
    await page.getByRole('alert').waitFor({ timeout: UPLOAD_DEADLINE });
    expect(await page.getByRole('alert').textContent()).toMatch(/^Finalize failed: /);
    // Done uploads are forgotten.
    expect(await page.evaluate('JSON.stringify(localStorage)')).not.toContain(uploadPath);
  }, 3 * UPLOAD_DEADLINE);
});
