/** The transcoder module with real ffmpeg and a real Redis: ladders, layouts, status and audit. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../shared/platform/config.js';
import type { MediaStore } from '../shared/video/store.js';
import type { Redis } from '../shared/platform/redis.js';
import { aspectGrid, planLadder } from '../shared/transcode/ladder.js';
import { acquireLease } from '../shared/transcode/lease.js';
import { ProgressParser } from '../shared/transcode/ffmpeg-run.js';
import { checkEncoders, transcodeVideo, type TranscoderDeps } from '../shared/transcode/transcoder.js';
import { readAuditEntries } from './helpers/audit.js';
import { expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { startTranscoder, transcodeJob as job, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'pv-transcode-'));
let harness: TranscoderHarness;
let redis: Redis;
let config: Config;
let deps: TranscoderDeps;
let store: MediaStore;


beforeAll(async () => {
  harness = await startTranscoder(tmp);
  ({ redis, config, deps, store } = harness);
});

afterAll(async () => {
  await harness.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('ladder', () => {
  it('puts every rung of a 16:9 source on one aspect grid (Apple sizes), never above the source', () => {
    const rungs = planLadder({ width: 1280, height: 720 }, ['240p', '360p', '480p', '720p', '1080p']);
    expect(rungs.map((r) => `${r.name}=${r.width}x${r.height}`)).toEqual(['240p=416x234', '360p=640x360', '480p=864x486', '720p=1280x720']);
    for (const r of rungs) expect(r.width / r.height).toBe(16 / 9);
  });

  it('uses the short side for portrait sources', () => {
    const rungs = planLadder({ width: 720, height: 1280 }, ['240p', '360p', '720p', '1080p']);
    expect(rungs.map((r) => `${r.width}x${r.height}`)).toEqual(['234x416', '360x640', '720x1280']);
  });

  it('keeps the display aspect of odd-sized sources through the sample aspect ratio', () => {
    const rungs = planLadder({ width: 1278, height: 720 }, ['360p', '720p']);
    for (const r of rungs) {
      expect(r.width % 2 + (r.height % 2)).toBe(0);
      const [n, d] = r.sar.split('/').map(Number);
      expect(Math.abs(((r.width * n!) / d!) / r.height - 1278 / 720)).toBeLessThan(1e-9);
    }
    expect(aspectGrid(4, 3)).toEqual({ long: 8, short: 6 });
  });

  it('gives a source smaller than every rung one rung at its own size', () => {
    expect(planLadder({ width: 320, height: 180 }, ['240p', '360p']).map((r) => `${r.name}=${r.width}x${r.height}`)).toEqual(['240p=320x180']);
  });
});

describe('progress parsing', () => {
  it('reads out_time_us per block and the end marker', () => {
    const seen: { outTimeSeconds: number; done: boolean }[] = [];
    const p = new ProgressParser((x) => seen.push(x));
    p.push('frame=10\nout_time_us=N/A\nprogress=continue\nout_time_us=1500');
    p.push('000\nprogress=continue\nout_time_us=3000000\nprogress=end\n');
    expect(seen).toEqual([
      { outTimeSeconds: 0, done: false },
      { outTimeSeconds: 1.5, done: false },
      { outTimeSeconds: 3, done: true },
    ]);
  });
});

describe('transcodeVideo', () => {
  it('turns a 6 s 1280x720 clip into exactly 240p/360p/480p/720p, HLS + DASH over shared segments', async () => {
    const clip = await makeClip(path.join(tmp, 'landscape.mp4'), { seconds: 6, width: 1280, height: 720, fps: 25 });
    const meta = await addVideo(store, clip);
    const codecs = await checkEncoders(config);
    const progress: number[] = [];
    store.onWrite((m) => {
      if (m.videoId === meta.videoId && m.status === 'transcoding') progress.push(m.progress ?? -1);
    });
    const result = await transcodeVideo(deps, codecs, job(meta.videoId));
    expect(result.outcome).toBe('transcoded');

    const ladder = expectValidLadder(store.dir(meta.videoId), { sourceDuration: meta.duration!, hasAudio: true });
    expect(ladder.renditions).toEqual(['240p', '360p', '480p', '720p']);
    expect(ladder.resolutions).toEqual(['416x234', '640x360', '864x486', '1280x720']);
    const done = await store.read(meta.videoId);
    expect(done).toMatchObject({ status: 'transcoded', progress: 100, renditions: ['240p', '360p', '480p', '720p'], outputs: { hlsMaster: 'hls/master.m3u8', dashManifest: 'hls/manifest.mpd', poster: 'hls/poster.jpg' } });
    expect(progress[0]).toBe(0);

    const mine = readAuditEntries(config.auditDir).filter((a) => a.category === 'transcode' && a.videoId === meta.videoId);
    expect(mine.map((a) => a.action)).toEqual(['transcode.start', 'transcode.complete']);
    expect(JSON.stringify(mine)).not.toContain('clinic-visit');

    // A duplicate delivery of the same job is harmless: nothing is redone.
    expect(await transcodeVideo(deps, codecs, job(meta.videoId))).toEqual({ outcome: 'already_transcoded' });
  });

  it('handles a portrait phone clip (rotation) and a clip without audio', async () => {
    const portrait = await makeClip(path.join(tmp, 'portrait.mp4'), { seconds: 3, width: 640, height: 360, rotate: 90 });
    const silent = await makeClip(path.join(tmp, 'silent.mp4'), { seconds: 3, width: 640, height: 480, audio: false });
    const codecs = await checkEncoders(config);
    const p = await addVideo(store, portrait);
    await transcodeVideo(deps, codecs, job(p.videoId));
    const pl = expectValidLadder(store.dir(p.videoId), { sourceDuration: p.duration!, hasAudio: true });
    expect(pl.resolutions).toEqual(['234x416', '360x640']);

    const s = await addVideo(store, silent);
    await transcodeVideo(deps, codecs, job(s.videoId));
    const sl = expectValidLadder(store.dir(s.videoId), { sourceDuration: s.duration!, hasAudio: false });
    expect(sl.resolutions).toEqual(['320x240', '480x360', '640x480']);
  });

  it('refuses a job whose video another transcoder holds (409), and fails a corrupt original with a reason', async () => {
    const clip = await makeClip(path.join(tmp, 'short.mp4'), { seconds: 1 });
    const codecs = await checkEncoders(config);
    const held = await addVideo(store, clip);
    const lease = await acquireLease(redis, held.videoId, 5_000);
    await expect(transcodeVideo(deps, codecs, job(held.videoId))).rejects.toMatchObject({ status: 409, code: 'transcode_in_progress' });
    await lease!.release();

    const corrupt = await addVideo(store, path.join(tmp, 'short.mp4'));
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path.join(store.dir(corrupt.videoId), 'original.mp4'), 'not a video at all');
    await expect(transcodeVideo(deps, codecs, job(corrupt.videoId))).rejects.toMatchObject({ status: 422, code: 'unreadable_original' });
  });
});
