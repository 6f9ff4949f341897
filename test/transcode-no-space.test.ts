/**
 * A transcode that runs out of disk: the transcoder answers 507 `no_space` (on a real, tiny tmpfs
 * under the video directory), and the job's life (shared/transcode/job.ts) waits for space with
 * back-off without spending an attempt — never dead-lettered, never `failed` — while any other
 * failure of the same job out of attempts is. Real Redis, real ffmpeg, the real audit writer.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/platform/log.js';
import { registry } from '../shared/platform/metrics.js';
import { markTranscoding } from '../shared/video/state.js';
import { enqueueTranscode, JobLife } from '../shared/transcode/job.js';
import { queueStats, TranscodeQueue, type QueueEntry, type TranscodeJob } from '../shared/transcode/queue.js';
import { checkEncoders, transcodeVideo } from '../shared/transcode/transcoder.js';
import { readAuditEntries } from './helpers/audit.js';
import { makeClip } from './helpers/media.js';
import { startTranscoder, transcodeJob, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'pv-no-space-'));
const videos = path.join(tmp, 'videos');
let harness: TranscoderHarness;
let mounted = false;

beforeAll(async () => {
  mkdirSync(videos, { recursive: true });
  // 4 MB: room for the clip and meta.json; the rest is filled once the video is in.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0750', 'tmpfs', videos]);
  mounted = true;
  harness = await startTranscoder(tmp);
});
afterAll(async () => {
  await harness?.close();
  if (mounted) execFileSync('umount', [videos]);
  rmSync(tmp, { recursive: true, force: true });
});

const waitingForSpace = async () => (await registry.getSingleMetric('pulsevault_queue_jobs_total')!.get()).values.find((v) => v.labels.outcome === 'waiting_for_space')?.value ?? 0;

describe('a transcode without disk space', () => {
  it('answers 507 no_space when ffmpeg runs out of room on the media volume', async () => {
    const clip = await makeClip(path.join(tmp, 'clip.mp4'), { seconds: 1 });
    const video = await addVideo(harness.store, clip);
    // Leave 48 KiB: meta.json's writes fit, the ladder's segments do not.
    const { bavail, bsize } = statfsSync(videos);
    writeFileSync(path.join(videos, 'filler'), Buffer.alloc(Number(bavail) * bsize - 48 * 1024));
    const codecs = await checkEncoders(harness.config);
    const err = await transcodeVideo(harness.deps, codecs, transcodeJob(video.videoId)).then(
      () => null,
      (e: unknown) => e as { status: number; code: string; message: string },
    );
    expect(err, 'the transcode must fail on a full disk').not.toBeNull();
    expect({ status: err!.status, code: err!.code }, err!.message).toEqual({ status: 507, code: 'no_space' });
    const errors = readAuditEntries(harness.config.auditDir).filter((e) => e.videoId === video.videoId && e.action === 'transcode.error');
    expect(errors.map((e) => e.reason)).toEqual(['no_space']);
  });

  it('waits for space with back-off and spends no attempt, even on the last one; any other failure then dead-letters', async () => {
    const { config, redis, store, deps, server } = harness;
    const queue = new TranscodeQueue(redis, server.client(), 'no-space-test');
    await queue.ensureGroup();
    const life = new JobLife({ config, queue, store, audit: deps.audit, log: createLogger('test', 'error') });
    const video = await addVideo(store, null);
    await enqueueTranscode(redis, video.videoId, null, { store, audit: deps.audit });
    const [read] = await queue.read(1, 1_000);
    // The last attempt: one more real failure would be the end of it.
    const last: QueueEntry & { job: TranscodeJob } = { ...read!, job: { ...read!.job!, attempt: config.transcode.maxAttempts } };
    await markTranscoding(store, video.videoId, last.job.attempt);
    const before = await waitingForSpace();

    const waits: number[] = [];
    for (let wait = 1; wait <= config.transcode.maxAttempts + 2; wait++) {
      const next = await life.settle(last, { kind: 'no_space', code: 'no_space' }, wait);
      expect(next.kind).toBe('again');
      if (next.kind === 'again') waits.push(next.ms);
      expect(await queueStats(redis)).toMatchObject({ inFlight: 1, deadLettered: 0, delayed: 0 });
      // Back to `queued` with the reason, as a retry says; the next delivery moves it to `transcoding` again.
      expect(await store.read(video.videoId)).toMatchObject({ status: 'queued', failureReason: expect.stringContaining('no_space') });
      await markTranscoding(store, video.videoId, last.job.attempt);
    }
    expect(waits.every((ms) => ms > 0 && ms <= 5 * 60_000)).toBe(true);
    // Exponential: the last wait's ceiling is above the first's (jitter is at most a factor 2).
    expect(Math.max(...waits.slice(-2))).toBeGreaterThan(waits[0]!);
    expect((await waitingForSpace()) - before).toBe(config.transcode.maxAttempts + 2);
    const retries = readAuditEntries(config.auditDir).filter((e) => e.videoId === video.videoId && e.action === 'transcode.retry');
    expect(retries.map((e) => e.reason)).toEqual(Array(config.transcode.maxAttempts + 2).fill('no_space'));

    // The control: the same job's last attempt failing for another reason is the end.
    expect(await life.settle(last, { kind: 'failed', code: 'ffmpeg_failed', status: 500 }, 1)).toEqual({ kind: 'settled' });
    expect(await queueStats(redis)).toMatchObject({ inFlight: 0, deadLettered: 1 });
    expect(await store.read(video.videoId)).toMatchObject({ status: 'failed' });
  });
});
