/**
 * Transcode fan-out with real ffmpeg and a real Redis: a 10 s clip in 4 s chunks
 * (2 segments of 2 s), each chunk its own job, joined into the published layout.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import HLS from 'hls-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metadataView } from '../shared/delivery/metadata-view.js';
import type { MediaStore, VideoMeta } from '../shared/video/store.js';
import { SEGMENT_SECONDS } from '../shared/transcode/ffmpeg-command.js';
import { chunkFile, CHUNKS_DIR, planChunks } from '../shared/transcode/fanout.js';
import { checkEncoders, transcodeVideo, type TranscoderDeps } from '../shared/transcode/transcoder.js';
import { readAuditEntries } from './helpers/audit.js';
import { joinRung, packets, rungSegments, runFannedOut, ssim, tfdt, timescale } from './helpers/fanout.js';
import { expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { startTranscoder, transcodeJob as job, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';
import { STACK_START_DEADLINE_MS } from './helpers/stack.js';

const run = promisify(execFile);
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-fanout-'));
const FPS = 25;
const CHUNK_SEGMENTS = 2;
const CHUNK_SECONDS = CHUNK_SEGMENTS * SEGMENT_SECONDS;
let harness: TranscoderHarness;
let store: MediaStore;
let chunked: TranscoderDeps;
let clip: string;
/** The same source, fanned out and in one job. */
let fanned: VideoMeta;
let single: VideoMeta;
/** meta.json's progress as the fanned-out video's parts wrote it. */
const progress: number[] = [];
/** What /metadata said once the preview was published, and whether the ladder was published yet. */
let atPreview: { view: Record<string, unknown>; ladderPublished: boolean } | null = null;

beforeAll(async () => {
  harness = await startTranscoder(tmp, { RENDITIONS: '240p,360p', TRANSCODE_CHUNK_SEGMENTS: String(CHUNK_SEGMENTS) });
  store = harness.store;
  chunked = harness.deps;
  clip = await makeClip(path.join(tmp, 'clip.mp4'), { seconds: 10, width: 640, height: 360, fps: FPS });
  const codecs = await checkEncoders(harness.config);
  fanned = await addVideo(store, clip);
  single = await addVideo(store, clip);
  store.onWrite((m) => {
    if (m.videoId === fanned.videoId && m.status === 'transcoding') progress.push(m.progress ?? -1);
  });
  const results = await runFannedOut(chunked, codecs, job(fanned.videoId), 2, async (part) => {
    if (part.part?.kind !== 'preview') return;
    const meta = await store.read(fanned.videoId);
    atPreview = { view: metadataView(meta, false), ladderPublished: existsSync(path.join(store.dir(fanned.videoId), 'hls')) };
  });
  expect(results.get(fanned.videoId)).toEqual({ outcome: 'fanned_out', chunks: 3 });
  expect(results.get(`${fanned.videoId}:preview`)).toEqual({ outcome: 'preview_published', rendition: '240p' });
  expect(await transcodeVideo(harness.depsWith({ TRANSCODE_CHUNK_SEGMENTS: '0' }), codecs, job(single.videoId))).toMatchObject({ outcome: 'transcoded' });
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await harness.close();
  rmSync(tmp, { recursive: true, force: true });
});

const hlsDir = (v: VideoMeta) => path.join(store.dir(v.videoId), 'hls');
const master = (v: VideoMeta) => {
  const m = HLS.parse(readFileSync(path.join(hlsDir(v), 'master.m3u8'), 'utf8'));
  if (!m.isMasterPlaylist) throw new Error('not a master playlist');
  return m;
};
/** Every media playlist of a published ladder: the video rungs and the audio rendition. */
const playlists = (v: VideoMeta) => [...master(v).variants.map((x) => x.uri), master(v).variants[0]!.audio[0]!.uri!];

describe('planning', () => {
  it('splits on segment boundaries, keeps short videos one job and folds a sub-segment tail into the last chunk', () => {
    expect(planChunks(10, 2)).toEqual([0, 4, 8]);
    expect(planChunks(4, 2)).toBeNull();
    expect(planChunks(9, 2)).toEqual([0, 4]);
    expect(planChunks(3600, 0)).toBeNull();
    expect(planChunks(3600, 30)).toHaveLength(60);
  });
});

/** The cues of a thumbnails.vtt: time range, sheet and tile rectangle. */
function thumbnailCues(v: VideoMeta) {
  const text = readFileSync(path.join(hlsDir(v), 'thumbnails.vtt'), 'utf8');
  expect(text.startsWith('WEBVTT')).toBe(true);
  const seconds = (t: string) => t.split(':').reduce((acc, x) => acc * 60 + Number(x), 0);
  return [...text.matchAll(/^([\d:.]+) --> ([\d:.]+)\n(\S+\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)$/gm)].map((m) => ({
    start: seconds(m[1]!),
    end: seconds(m[2]!),
    sheet: m[3]!,
    rect: m.slice(4, 8).map(Number) as [number, number, number, number],
  }));
}

describe('re-planning (a requeue, a recovery after Redis lost its jobs)', () => {
  it('keeps the chunks already done and counts them in the progress', async () => {
    const codecs = await checkEncoders(harness.config);
    const v = await addVideo(store, clip);
    expect(await transcodeVideo(chunked, codecs, job(v.videoId))).toEqual({ outcome: 'fanned_out', chunks: 3 });
    expect(await transcodeVideo(chunked, codecs, { ...job(v.videoId), part: { kind: 'chunk', index: 0 } })).toEqual({ outcome: 'chunk_transcoded', chunk: 0 });
    const first = statSync(chunkFile(store.dir(v.videoId), 0)).ino;
    expect(await transcodeVideo(chunked, codecs, job(v.videoId))).toEqual({ outcome: 'fanned_out', chunks: 3 });
    expect(statSync(chunkFile(store.dir(v.videoId), 0)).ino).toBe(first);
    // Chunk 1 reports: chunk 0 (4 of the 10 s) is in the number already.
    await transcodeVideo(chunked, codecs, { ...job(v.videoId), part: { kind: 'chunk', index: 1 } });
    expect((await store.read(v.videoId)).progress).toBeGreaterThanOrEqual(Math.floor(0.8 * 99));
  });
});

describe('a fanned-out transcode', () => {
  it('publishes a complete ladder (HLS + DASH, measured BANDWIDTH/CODECS) and leaves no chunks behind', async () => {
    const ladder = expectValidLadder(store.dir(fanned.videoId), { sourceDuration: fanned.duration!, hasAudio: true });
    expect(ladder.resolutions).toEqual(['416x234', '640x360']);
    expect(readdirSync(store.dir(fanned.videoId))).not.toContain(CHUNKS_DIR);
    const done = await store.read(fanned.videoId);
    expect(done).toMatchObject({ status: 'transcoded', progress: 100, renditions: ['240p', '360p'] });
    const actions = readAuditEntries(harness.config.auditDir)
      .filter((a) => a.category === 'transcode' && a.videoId === fanned.videoId)
      .map((a) => a.action);
    expect(actions.filter((a) => a === 'transcode.chunk.complete')).toHaveLength(3);
    expect(actions.at(-1)).toBe('transcode.complete');
    // The master declares what was measured, as a single-pass encode does: within 10 % of it.
    master(fanned).variants.forEach((v, i) => {
      const reference = master(single).variants[i]!;
      expect(v.codecs).toBe(reference.codecs);
      expect(Math.abs(v.bandwidth / reference.bandwidth - 1)).toBeLessThan(0.1);
    });
  });

  it('plays early: the preview rung (with audio) is published and listed by /metadata before the ladder, and kept after it', async () => {
    expect(atPreview).not.toBeNull();
    expect(atPreview!.ladderPublished).toBe(false);
    expect(atPreview!.view).toMatchObject({
      status: 'transcoding',
      renditionsReady: ['240p'],
      preview: { hlsMaster: 'preview/master.m3u8', dashManifest: 'preview/manifest.mpd' },
    });
    const preview = HLS.parse(readFileSync(path.join(store.dir(fanned.videoId), 'preview', 'master.m3u8'), 'utf8'));
    if (!preview.isMasterPlaylist) throw new Error('not a master playlist');
    expect(preview.variants.map((v) => `${v.resolution!.width}x${v.resolution!.height}`)).toEqual(['416x234']);
    expect(preview.variants[0]!.audio).toHaveLength(1);
    const seconds = rungSegments(path.join(store.dir(fanned.videoId), 'preview'), preview.variants[0]!.uri).segments.reduce((t, s) => t + s.duration, 0);
    expect(Math.abs(seconds - fanned.duration!)).toBeLessThanOrEqual(0.2);
    // Once transcoded, /metadata lists the whole ladder and no longer the preview.
    const view = metadataView(await store.read(fanned.videoId), false);
    expect(view).toMatchObject({ status: 'transcoded', renditions: ['240p', '360p'] });
    expect(view).not.toHaveProperty('preview');
    expect(view).not.toHaveProperty('renditionsReady');
  });

  it('reports one monotonic progress across the chunks, 100 when published', async () => {
    expect(progress.length).toBeGreaterThan(3);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!, `write ${i} of ${progress.join(',')}`).toBeGreaterThanOrEqual(progress[i - 1]!);
    expect(progress.at(-1)!).toBeGreaterThanOrEqual(90);
    expect((await store.read(fanned.videoId)).progress).toBe(100);
  });

  it('has continuous timestamps across every chunk boundary in every rung and the audio: tfdt, PTS and DTS', async () => {
    for (const playlist of playlists(fanned)) {
      const rung = rungSegments(hlsDir(fanned), playlist);
      const scale = timescale(readFileSync(path.join(hlsDir(fanned), rung.init)));
      const starts = rung.segments.map((s) => Number(tfdt(readFileSync(path.join(hlsDir(fanned), s.uri)))) / scale);
      if (playlist.startsWith('audio')) {
        // Audio is encoded once for the whole video (no chunk boundary); its EXTINFs are rounded to AAC frames.
        for (let i = 1; i < starts.length; i++) expect(starts[i]!).toBeGreaterThan(starts[i - 1]!);
      } else {
        // Each fragment starts where the ones before it end.
        let expected = 0;
        rung.segments.forEach((s, i) => {
          expect(starts[i], `${playlist} ${s.uri}`).toBeCloseTo(expected, 3);
          expected += s.duration;
        });
      }
      const all = await packets(joinRung(hlsDir(fanned), rung, path.join(tmp, `${fanned.videoId}-${playlist}.mp4`)));
      const step = (all[1]!.dts - all[0]!.dts);
      for (let i = 1; i < all.length; i++) expect(all[i]!.dts - all[i - 1]!.dts, `${playlist} packet ${i}`).toBeCloseTo(step, 4);
      if (playlist.startsWith('audio')) continue;
      expect(step).toBeCloseTo(1 / FPS, 4);
      const pts = all.map((p) => p.pts).sort((a, b) => a - b);
      expect(pts).toHaveLength(fanned.duration! * FPS);
      pts.forEach((t, i) => expect(t, `${playlist} frame ${i}`).toBeCloseTo(pts[0]! + i / FPS, 4));
      // A keyframe opens every chunk (and every segment) at its planned second.
      const keyframes = all.filter((p) => p.keyframe).map((p) => Math.round((p.pts - pts[0]!) * 1000) / 1000);
      for (const start of [0, CHUNK_SECONDS, 2 * CHUNK_SECONDS]) expect(keyframes).toContain(start);
    }
  });

  it('cuts every segment at the target duration (the last may be shorter), one init segment per rendition', () => {
    for (const playlist of playlists(fanned)) {
      const rung = rungSegments(hlsDir(fanned), playlist);
      const media = HLS.parse(readFileSync(path.join(hlsDir(fanned), playlist), 'utf8'));
      expect(media.isMasterPlaylist ? 0 : media.targetDuration).toBe(SEGMENT_SECONDS);
      const durations = rung.segments.map((s) => s.duration);
      for (const d of durations.slice(0, -1)) expect(d, playlist).toBeCloseTo(SEGMENT_SECONDS, 1);
      expect(durations.at(-1)!).toBeLessThanOrEqual(SEGMENT_SECONDS + 0.05);
      expect(new Set(rung.segments.map(() => rung.init)).size).toBe(1);
    }
  });

  it('looks like a single-pass encode of the same source: SSIM within 0.005 per rung', async () => {
    const rungs = master(fanned).variants;
    for (const [i, v] of rungs.entries()) {
      const { width, height } = v.resolution!;
      const measure = (meta: VideoMeta, uri: string) =>
        ssim(joinRung(hlsDir(meta), rungSegments(hlsDir(meta), uri), path.join(tmp, `${meta.videoId}-ssim-${uri}.mp4`)), clip, width, height);
      const chunkedSsim = await measure(fanned, v.uri);
      const singleSsim = await measure(single, master(single).variants[i]!.uri);
      expect(Math.abs(chunkedSsim - singleSsim), `${v.uri}: chunked ${chunkedSsim}, single pass ${singleSsim}`).toBeLessThanOrEqual(0.005);
    }
  });

  it('builds seek thumbnails per chunk into one WebVTT index over the whole video, listed with the poster in /metadata', async () => {
    const cues = thumbnailCues(fanned);
    expect(cues).toHaveLength(Math.ceil(fanned.duration! / SEGMENT_SECONDS));
    cues.forEach((c, i) => {
      expect(c.start).toBeCloseTo(i * SEGMENT_SECONDS, 3);
      expect(c.end).toBeCloseTo(Math.min((i + 1) * SEGMENT_SECONDS, fanned.duration!), 3);
    });
    // One sprite sheet per chunk, every tile inside its sheet.
    expect([...new Set(cues.map((c) => c.sheet))]).toEqual(['thumbs_0_000.jpg', 'thumbs_1_000.jpg', 'thumbs_2_000.jpg']);
    for (const c of cues) {
      const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', path.join(hlsDir(fanned), c.sheet)]);
      const [w, h] = stdout.trim().split(',').map(Number) as [number, number];
      expect(c.rect[0] + c.rect[2]).toBeLessThanOrEqual(w);
      expect(c.rect[1] + c.rect[3]).toBeLessThanOrEqual(h);
      expect(c.rect.slice(2)).toEqual([160, 90]);
    }
    // The tile for 6 s comes from chunk 1 yet shows what a single pass shows there.
    const tile = async (v: VideoMeta, at: number) => {
      const c = thumbnailCues(v).find((x) => x.start <= at && at < x.end)!;
      const out = path.join(tmp, `${v.videoId}-tile-${at}.png`);
      await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-i', path.join(hlsDir(v), c.sheet), '-vf', `crop=${c.rect[2]}:${c.rect[3]}:${c.rect[0]}:${c.rect[1]}`, out]);
      return out;
    };
    const { stderr } = await run('ffmpeg', ['-hide_banner', '-i', await tile(fanned, 6), '-i', await tile(single, 6), '-lavfi', 'ssim', '-f', 'null', '-']);
    expect(Number(/All:([\d.]+)/.exec(stderr)?.[1])).toBeGreaterThan(0.9);
    expect(metadataView(await store.read(fanned.videoId), false)).toMatchObject({ poster: 'hls/poster.jpg', thumbnails: 'hls/thumbnails.vtt' });
    expect(thumbnailCues(single).map((c) => c.sheet)).toContain('thumbs_0_000.jpg');
  });
});
