/**
 * Headless Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by
 * playwright-core (which never downloads a browser), with a fresh profile per launch.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export interface TestBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<TestBrowser> {
  const profile = mkdtempSync(path.join(tmpdir(), 'pv-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1000, height: 1100 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      // Players start muted anyway; this keeps autoplay independent of Chromium's engagement heuristics.
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A page on the stack's console origin with the console's own hls.js and dash.js builds loaded (PLAY_ENCRYPTED's players). */
export async function playerPage(browser: TestBrowser, stackUrl: string): Promise<Page> {
  const page = await browser.context.newPage();
  await page.goto(`${stackUrl}/console/`);
  await page.addScriptTag({ url: '/console/vendor/hls.min.js' });
  await page.addScriptTag({ url: '/console/vendor/dash.all.min.js' });
  return page;
}

/** In the page: play `kind` with ClearKey from `license` until 1 s has played (or an error). */
export const PLAY_ENCRYPTED = `async function ({ kind, master, mpd, license }) {
  const video = document.createElement('video');
  video.muted = true;
  document.body.append(video);
  let error = null;
  video.addEventListener('error', () => { error = 'media error ' + (video.error && video.error.code); });
  let player;
  if (kind === 'hls') {
    player = new Hls({ emeEnabled: true, drmSystems: { 'org.w3.clearkey': { licenseUrl: license } } });
    player.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) error = d.details; });
    player.loadSource(master);
    player.attachMedia(video);
    video.play().catch(() => {});
  } else {
    player = dashjs.MediaPlayer().create();
    player.setProtectionData({ 'org.w3.clearkey': { serverURL: license } });
    player.on('error', (e) => { error = (e.error && e.error.message) || 'dash.js error'; });
    player.initialize(video, mpd, true);
  }
  const end = Date.now() + 60000;
  while (!error && video.currentTime < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  const result = { error, currentTime: video.currentTime, width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames };
  player.destroy();
  video.remove();
  return result;
}`;
