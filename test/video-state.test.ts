/** The video status machine (shared/video/state.ts) over a real media dir and a real redis-server. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import {
  IllegalTransitionError,
  MOVES,
  VIDEO_STATUSES,
  markDeleted,
  markFailed,
  markProgress,
  markQueued,
  markRequeued,
  markRetrying,
  markTranscoded,
  markTranscoding,
  outcomeOf,
  type MoveName,
  type VideoStatus,
} from '../shared/video/state.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { addVideo } from './helpers/videos.js';

let server: TestRedis;
let store: MediaStore;
const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-state-'));

beforeAll(async () => {
  server = await startRedis();
  store = new MediaStore(path.join(mediaRoot, 'videos'), server.client());
});
afterAll(async () => {
  await server.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

const video = (status: VideoStatus, extra: Partial<VideoMeta> = {}) => addVideo(store, null, { status, ...extra });
const onDisk = (videoId: string) => JSON.parse(readFileSync(store.metaPath(videoId), 'utf8')) as VideoMeta;

const OUTPUTS = {
  ladder: [
    { name: '240p' as const, width: 416, height: 234, kbps: 145 },
    { name: '480p' as const, width: 864, height: 486, kbps: 1100 },
  ],
  codecs: ['h264' as const],
  outputs: { hlsMaster: 'hls/master.m3u8', dashManifest: 'hls/manifest.mpd', poster: 'hls/poster.jpg' },
};

/** One call per move, so the table below can drive every move from every status. */
const apply: Record<MoveName, (videoId: string) => ReturnType<typeof markQueued>> = {
  queue: (id) => markQueued(store, id),
  requeue: (id) => markRequeued(store, id),
  start: (id) => markTranscoding(store, id, 2),
  progress: (id) => markProgress(store, id, 42),
  complete: (id) => markTranscoded(store, id, OUTPUTS),
  retry: (id) => markRetrying(store, id, 'unreachable (attempt 1 of 3)'),
  fail: (id) => markFailed(store, id, 'unreachable (attempt 3 of 3)'),
  dispose: (id) => markDeleted(store, id, { deletedAt: new Date().toISOString(), deletedBy: null, reason: 'duplicate' }, async () => {}),
};

describe('video status transitions', () => {
  it('every move from every status moves, keeps or refuses exactly as MOVES says', async () => {
    for (const move of Object.keys(MOVES) as MoveName[]) {
      for (const from of VIDEO_STATUSES) {
        const v = await video(from);
        const outcome = outcomeOf(move, from);
        if (outcome === 'illegal') {
          const before = readFileSync(store.metaPath(v.videoId), 'utf8');
          await expect(apply[move](v.videoId), `${move} from ${from}`).rejects.toBeInstanceOf(IllegalTransitionError);
          expect(readFileSync(store.metaPath(v.videoId), 'utf8'), `${move} from ${from} left meta.json as it was`).toBe(before);
          continue;
        }
        const { meta, moved } = await apply[move](v.videoId);
        expect(moved, `${move} from ${from}`).toBe(outcome === 'move');
        expect(onDisk(v.videoId).status, `${move} from ${from}`).toBe(outcome === 'move' ? MOVES[move].to : from);
        expect(meta.status).toBe(onDisk(v.videoId).status);
      }
    }
  });

  it('refuses the moves no caller can make legitimately', () => {
    expect(outcomeOf('complete', 'uploaded')).toBe('illegal'); // the transcoder always marks `transcoding` first
    expect(outcomeOf('fail', 'transcoded')).toBe('keep'); // published outputs outrank a connector's verdict
    expect(outcomeOf('retry', 'transcoded')).toBe('keep');
    expect(outcomeOf('queue', 'transcoded')).toBe('keep'); // finalize after a fast transcode: not back to queued
    expect(outcomeOf('requeue', 'transcoding')).toBe('keep');
    expect(outcomeOf('progress', 'transcoded')).toBe('keep');
  });

  it('deleted is terminal: every other move keeps it, and the tombstone carries no PHI', async () => {
    for (const move of Object.keys(MOVES) as MoveName[]) expect(outcomeOf(move, 'deleted'), move).toBe('keep');
    const v = await video('transcoded', { filename: 'PHI-name.mp4', metadata: { title: 'PHI' }, outputs: OUTPUTS.outputs, size: 7, checksum: 'sha256:ab' });
    await markDeleted(store, v.videoId, { deletedAt: '2026-12-06T00:00:00.000Z', deletedBy: 'sub-x', reason: 'duplicate' }, async () => {});
    await markTranscoded(store, v.videoId, OUTPUTS); // a transcode that published after the delete
    const meta = onDisk(v.videoId);
    expect(meta).toMatchObject({ status: 'deleted', filename: '', metadata: {}, renditions: [], size: 7, checksum: 'sha256:ab', deletion: { reason: 'duplicate', deletedBy: 'sub-x', disposedAt: null } });
    expect(meta.outputs).toBeUndefined();
    expect(JSON.stringify(meta)).not.toContain('PHI');
  });

  it('a commit that throws leaves meta.json as it was', async () => {
    const v = await video('transcoded');
    const before = readFileSync(store.metaPath(v.videoId), 'utf8');
    await expect(markDeleted(store, v.videoId, { deletedAt: new Date().toISOString(), deletedBy: null, reason: 'duplicate' }, async () => { throw new Error('audit down'); })).rejects.toThrow('audit down');
    expect(readFileSync(store.metaPath(v.videoId), 'utf8')).toBe(before);
  });

  it('markTranscoded records the ladder, codecs and outputs and clears a previous failure', async () => {
    const v = await video('transcoding', { failureReason: 'timeout (attempt 1 of 3)', progress: 57 });
    await markTranscoded(store, v.videoId, OUTPUTS);
    const meta = await store.read(v.videoId);
    expect(meta).toMatchObject({ status: 'transcoded', progress: 100, renditions: ['240p', '480p'], ladder: OUTPUTS.ladder, codecs: ['h264'], outputs: OUTPUTS.outputs });
    expect(meta.failureReason).toBeUndefined();
    expect(Date.parse(meta.transcodedAt!)).not.toBeNaN();
  });

  it('markTranscoding stamps the attempt and the start; progress follows only while transcoding', async () => {
    const v = await video('queued');
    await markTranscoding(store, v.videoId, 3);
    expect(await store.read(v.videoId)).toMatchObject({ status: 'transcoding', progress: 0, transcodeAttempt: 3, transcodeStartedAt: expect.any(String) });
    await markProgress(store, v.videoId, 40);
    expect((await store.read(v.videoId)).progress).toBe(40);
    await markTranscoded(store, v.videoId, OUTPUTS);
    await markProgress(store, v.videoId, 60); // a late progress write from a transcoder that lost its lease
    expect(await store.read(v.videoId)).toMatchObject({ status: 'transcoded', progress: 100 });
  });

  it('retry and fail record the reason and reset progress; a requeue clears the reason', async () => {
    const v = await video('transcoding', { progress: 80 });
    await markRetrying(store, v.videoId, 'invoke_timeout (attempt 1 of 2)');
    expect(await store.read(v.videoId)).toMatchObject({ status: 'queued', progress: 0, failureReason: 'invoke_timeout (attempt 1 of 2)' });
    await markFailed(store, v.videoId, 'invoke_timeout (attempt 2 of 2)');
    expect(await store.read(v.videoId)).toMatchObject({ status: 'failed', progress: 0, failureReason: 'invoke_timeout (attempt 2 of 2)' });
    const { moved } = await markRequeued(store, v.videoId);
    expect(moved).toBe(true);
    const meta = await store.read(v.videoId);
    expect(meta.status).toBe('queued');
    expect(meta.failureReason).toBeUndefined();
  });

  it('a kept video is still written back (the store listeners hear of it) with its content unchanged', async () => {
    const v = await video('transcoded', { renditions: ['240p'] });
    const listened = new MediaStore(store.videoDir, server.client());
    const heard: string[] = [];
    listened.onWrite((m) => void heard.push(m.videoId));
    const { meta, moved } = await markQueued(listened, v.videoId);
    expect(moved).toBe(false);
    expect(heard).toContain(v.videoId);
    expect(meta).toMatchObject({ status: 'transcoded', renditions: ['240p'] });
  });

  it('refuses an unknown video without creating it', async () => {
    await expect(markQueued(store, '6f1c1a43-1f6e-4f57-9d7e-0d3b1b7a2c11')).rejects.toMatchObject({ status: 404 });
  });
});
