/**
 * The console's records controls in headless Chromium against the local stack (media edge in
 * front): a video deleted while it plays (hls.js, dash.js) stops on the 410 its next segment gets; edit saves the
 * title with the ETag; delete asks for a reason and a confirmation; hold and retention are shown.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';
import { makeVideo } from '../helpers/delivery-video.js';
import { startStack, type TestStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

/** Chromium and ffmpeg share two cores with other test files: generous, polled deadlines. */
const DEADLINE = 90_000;

describe('console: edit, delete, hold and retention', () => {
  let stack: TestStack;
  let browser: TestBrowser;
  let page: Page;
  let devToken: string;
  const refused: { url: string; status: number }[] = [];

  const videoDir = () => path.join(stack.mediaRoot, 'videos');
  const text = (selector: string) => page.locator(selector).textContent();
  const currentTime = () => page.locator('#video-element').evaluate((v) => (v as unknown as { currentTime: number }).currentTime);

  async function open(videoId: string) {
    await page.locator('#video-id').fill(videoId);
    await page.locator('#open-form').evaluate((f) => (f as unknown as { requestSubmit(): void }).requestSubmit());
    await waitFor(async () => (await text('#video-status')) === 'transcoded', DEADLINE, 'the detail view to load');
  }

  beforeAll(async () => {
    stack = await startStack({ env: { NODE_ENV: 'development', LOG_LEVEL: 'warn' } });
    devToken = await waitFor(() => /^PULSEVAULT_DEV_TOKEN=(\S+)$/m.exec(stack.output())?.[1], 15_000, 'the dev token on the stack output');
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push({ url: new URL(r.url()).pathname, status: r.status() });
    });
    await page.goto(`${stack.url}/console/`);
    await page.getByLabel('Access token (JWT)').fill(devToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Upload a video' }).waitFor();
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  /** 60 s in short segments: hls.js buffers 30 s ahead, dash.js 12 s, so either still fetches segments after the delete. */
  const players = [
    { button: 'Play HLS (hls.js)', tree: 'hls' },
    { button: 'Play DASH (dash.js)', tree: 'dash' },
  ];
  it.each(players)('a video deleted while $button plays it: its next segment gets 410 video_deleted and the player stops', async ({ button, tree }) => {
    const v = await makeVideo(videoDir(), {}, { seconds: 60 });
    await open(v.videoId);
    expect(await text('#video-hold')).toBe('none');
    expect(await text('#video-retention')).toBe('until deleted');
    await page.getByRole('button', { name: button }).click();
    await waitFor(async () => (await currentTime()) > 0.5, DEADLINE, 'playback to start');

    // Deleted by another client (the API), while this one plays.
    const res = await fetch(`${stack.url}/media/videos/${v.videoId}?reason=recorded_in_error`, { method: 'DELETE', headers: { Authorization: `Bearer ${devToken}` } });
    expect(res.status).toBe(200);
    await waitFor(async () => (await text('#player-status')) === 'This video was deleted.', DEADLINE, 'the player to stop on a 410');
    expect(refused.some((r) => r.status === 410 && r.url.startsWith(`/media/videos/${v.videoId}/${tree}/`))).toBe(true);
    expect(await text('#video-status')).toBe('deleted');
    expect(await page.locator('#video-element').evaluate((e) => (e as unknown as { src: string }).src)).toBe('');
    for (const p of players) expect(await page.getByRole('button', { name: p.button }).isDisabled()).toBe(true);
  }, 3 * DEADLINE); // a 60 s clip made by ffmpeg, then two polled waits, on a loaded machine

  it('edits the title and description with the ETag, then deletes with a reason and a confirmation', async () => {
    const v = await makeVideo(videoDir());
    await open(v.videoId);
    await page.getByRole('button', { name: 'Edit' }).click();
    await page.locator('#edit-title').fill('Edited in the console');
    await page.locator('#edit-description').fill('A new description');
    await page.getByRole('button', { name: 'Save' }).click();
    await waitFor(async () => (await text('#video-title')) === 'Edited in the console', DEADLINE, 'the saved title');

    await page.getByRole('button', { name: 'Delete…' }).click();
    // Nothing happens without a reason; then the explicit confirmation deletes.
    await page.getByRole('button', { name: 'Delete permanently' }).click();
    expect(existsSync(path.join(v.dir, 'original.mp4'))).toBe(true);
    await page.locator('#delete-reason').selectOption('duplicate');
    await page.getByRole('button', { name: 'Delete permanently' }).click();
    await waitFor(async () => (await text('#video-status')) === 'deleted', DEADLINE, 'the video to be deleted');
    await waitFor(() => !existsSync(path.join(v.dir, 'original.mp4')), DEADLINE, 'the original to be gone');
  });

  it('shows a legal hold and refuses delete while it stands', async () => {
    const v = await makeVideo(videoDir());
    const hold = await fetch(`${stack.url}/media/videos/${v.videoId}/hold`, { method: 'PUT', headers: { Authorization: `Bearer ${devToken}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ reason: 'litigation' }) });
    expect(hold.status).toBe(200);
    await open(v.videoId);
    expect(await text('#video-hold')).toMatch(/^held since .* \(litigation\)$/);
    expect(await page.getByRole('button', { name: 'Delete…' }).isDisabled()).toBe(true);
  });
});
