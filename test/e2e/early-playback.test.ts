/**
 * Early playback through the console, in the real local stack with one
 * transcoder replica: a 12 s clip in 4 s chunks (small: the test is about the switch, not the encode). The console offers the preview
 * rung while the chunks are encoded, hls.js plays it through a signed URL, and
 * when the ladder is published the console moves the player onto hls/ from the
 * position it had reached.
 */
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog, type AuditLog } from '../../shared/audit/client.js';
import { loadConfig } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { enqueueTranscode } from '../../shared/transcode/job.js';
import { MediaStore } from '../../shared/video/store.js';
import { launchChromium, type TestBrowser } from '../helpers/browser.js';
import { makeClip } from '../helpers/media.js';
import { pidsWith } from '../helpers/processes.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from '../helpers/stack.js';
import { addVideo } from '../helpers/videos.js';
import { waitFor } from '../helpers/wait.js';

const DEADLINE = 180_000;
let stack: TestStack;
let browser: TestBrowser;
let page: Page;
let store: MediaStore;
let audit: AuditLog;
const requested: { path: string; at: number }[] = [];

beforeAll(async () => {
  stack = await startStack({
    env: {
      NODE_ENV: 'development',
      LOG_LEVEL: 'warn',
      LOCAL_REPLICAS: 'transcoder=1',
      RENDITIONS: '144p,240p,360p',
      TRANSCODE_CHUNK_SEGMENTS: '2',
      // One replica, one thread: the chunks take long enough after the preview to watch it.
      FFMPEG_PRESET: 'veryfast',
      FFMPEG_THREADS: '1',
    },
  });
  const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url }, { secretsDir: path.join(stack.mediaRoot, 'none') });
  store = new MediaStore(config.videoDir, stack.redis.client());
  audit = createAuditLog(config, stack.redis.client(), createLogger('test', 'error'));
  browser = await launchChromium();
  page = await browser.context.newPage();
  page.on('response', (r) => requested.push({ path: new URL(r.url()).pathname, at: Date.now() }));
  await page.goto(`${stack.url}/console/`);
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await audit?.close();
  await stack?.stop();
});

describe('early playback in the console', () => {
  it('plays the preview while transcoding, then continues on the full ladder from where it was', async () => {
    const devToken = await waitFor(() => /^PULSEVAULT_DEV_TOKEN=(\S+)$/m.exec(stack.output())?.[1], 15_000, 'the dev token');
    await page.getByLabel('Access token (JWT)').fill(devToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const clip = await makeClip(path.join(stack.mediaRoot, 'clip.mp4'), { seconds: 12, width: 640, height: 360 });
    const video = await addVideo(store, clip);
    await enqueueTranscode(stack.redis.client(), video.videoId, null, { store, audit });
    await page.getByLabel('Video ID').fill(video.videoId);
    await page.getByRole('button', { name: 'Open' }).click();

    await waitFor(async () => /^Preview ready/.test((await page.locator('#player-status').textContent()) ?? ''), DEADLINE, 'the console to offer the preview', 200);
    const currentTime = () => page.locator('#video-element').evaluate((v) => (v as unknown as { currentTime: number }).currentTime);
    const videoPath = (rel: string) => `/media/videos/${video.videoId}/${rel}`;
    // Hold the chunk encodes (SIGSTOP their ffmpeg; the transcoder itself keeps its lease alive) while the
    // preview plays, so the ladder cannot land before the player is on the preview, however fast the machine.
    const held = new Set<number>();
    const hold = () => {
      for (const pid of pidsWith('ffmpeg', video.videoId).filter((p) => !held.has(p))) {
        process.kill(pid, 'SIGSTOP');
        held.add(pid);
      }
    };
    hold();
    const holding = setInterval(hold, 20);
    let heldAt: number;
    try {
      expect((await store.read(video.videoId)).status).toBe('transcoding');
      await page.getByRole('button', { name: /Play HLS/ }).click();
      // Past the first two segments: a player restarted from 0 would fetch them from hls/, one that resumes does not.
      await waitFor(async () => (await currentTime()) > 4.5, DEADLINE, 'the preview to play past 4.5 s', 100);
      await page.locator('#video-element').evaluate((v) => (v as unknown as { pause(): void }).pause());
      heldAt = await currentTime();
      expect(requested.some((r) => r.path.startsWith(videoPath('preview/')) && r.path.endsWith('.m4s'))).toBe(true);
      expect(requested.some((r) => r.path.startsWith(videoPath('hls/')))).toBe(false);
    } finally {
      clearInterval(holding);
      for (const pid of held) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone already
        }
      }
    }

    await waitFor(async () => (await store.read(video.videoId)).status === 'transcoded', DEADLINE, 'the ladder to be published', 500);
    const master = await waitFor(() => requested.find((r) => r.path === videoPath('hls/master.m3u8')), DEADLINE, 'the player to load the full master', 200);
    await waitFor(() => requested.some((r) => r.path.startsWith(videoPath('hls/seg_')) && r.at >= master.at), DEADLINE, 'a segment of the full ladder', 200);
    // It went on from where it was, not from the start.
    await waitFor(async () => (await currentTime()) > heldAt + 0.5, DEADLINE, 'playback to continue on the full ladder', 200);
    const hlsSegments = requested.filter((r) => r.path.startsWith(videoPath('hls/seg_'))).map((r) => r.path);
    expect(hlsSegments.filter((p) => /_0000[12]\.m4s$/.test(p))).toEqual([]);
    // The 2 s segment holding the paused position (a loaded machine may have played on past 6 s before the pause).
    const resumedAt = String(Math.floor(heldAt! / 2) + 1).padStart(5, '0');
    expect(hlsSegments.some((p) => p.endsWith(`_${resumedAt}.m4s`)), `${hlsSegments.join(' ')} (paused at ${heldAt!} s)`).toBe(true);
    expect(await page.locator('#alert').isHidden()).toBe(true);
    expect(await page.locator('#player-status').textContent()).toMatch(/^Playing HLS/);
  }, 3 * DEADLINE);
});
