/**
 * A delete during a real transcode (ffmpeg over a lavfi clip, real Redis, the real audit writer):
 * the disposal revokes the video's lease and removes its work directory, so ffmpeg stops; the job ends as skipped
 * (video_deleted, acked by the connector) and nothing is published or resurrected.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeVideo } from '../shared/lifecycle/dispose.js';
import { DELETED_MARK } from '../shared/lifecycle/tombstone.js';
import { transcodeVideo } from '../shared/transcode/transcoder.js';
import { makeClip } from './helpers/media.js';
import { startTranscoder, transcodeJob, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

let root: string;
let t: TranscoderHarness;
let clip: string;

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'pv-lifecycle-transcode-'));
  // One whole transcode (no fan-out), long enough to be caught in the middle.
  [t, clip] = await Promise.all([
    startTranscoder(root, { TRANSCODE_CHUNK_SEGMENTS: '0', RENDITIONS: '240p,360p' }),
    makeClip(path.join(root, 'clip.mp4'), { seconds: 40, width: 640, height: 360 }),
  ]);
}, 120_000);
afterAll(async () => {
  await t?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('delete during a transcode', () => {
  it('stops the encode (lease revoked, work directory gone); the job is skipped and publishes nothing', async () => {
    const v = await addVideo(t.store, clip, { status: 'queued' });
    const transcode = transcodeVideo(t.deps, ['h264'], transcodeJob(v.videoId));
    await waitFor(async () => (await t.store.read(v.videoId)).status === 'transcoding', 60_000, 'the transcode to start');
    const started = Date.now();
    await disposeVideo({ config: t.config, store: t.store, redis: t.redis, audit: t.deps.audit, log: t.deps.log }, v.videoId, 'recorded_in_error', { actor: null, requestId: null, clientIp: null });
    expect(await transcode).toEqual({ outcome: 'skipped', reason: 'video_deleted' });
    // Stopped at once or at the lease's next renewal (5 s leases), far before a 40 s encode would end on this box.
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(readdirSync(t.store.dir(v.videoId)).sort()).toEqual([DELETED_MARK, 'meta.json']);
    expect((await t.store.read(v.videoId)).status).toBe('deleted');
    // A redelivery of the job does nothing.
    expect(await transcodeVideo(t.deps, ['h264'], transcodeJob(v.videoId))).toEqual({ outcome: 'skipped', reason: 'video_deleted' });
  });
});
