/**
 * ffmpeg dies with its transcoder: a transcoder process killed outright
 * (kill -9, OOM) must not leave an encoder running beside the retry.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { childPids } from './helpers/processes.js';
import { startTranscoder, transcodeJob, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-orphan-'));
let harness: TranscoderHarness;

/** Running, as opposed to gone or a zombie nobody has reaped yet (this sandbox's init reaps lazily). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

beforeAll(async () => {
  // Its Redis and audit writer serve the transcoder process below.
  harness = await startTranscoder(mediaRoot);
});

afterAll(async () => {
  await harness?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

it('kills ffmpeg within 2 s when its transcoder is killed with SIGKILL mid-encode', async () => {
  let transcoder: FunctionProcess | null = null;
  let ffmpeg: number | undefined;
  try {
    transcoder = await startFunctionProcess('transcoder', {
      REDIS_URL: harness.server.url,
      MEDIA_ROOT: mediaRoot,
      // One slow rung: the encode lasts well beyond the 2 s deadline below.
      RENDITIONS: '720p',
      FFMPEG_PRESET: 'veryfast',
      FFMPEG_THREADS: '1',
      TRANSCODE_LEASE_SECONDS: '5',
    });
    const clip = await makeClip(path.join(mediaRoot, 'clip.mp4'), { seconds: 6, width: 1280, height: 720 });
    const video = await addVideo(harness.store, clip);
    const answered = fetch(transcoder.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(transcodeJob(video.videoId)) }).catch(() => null);

    const parent = transcoder.process.pid!;
    [ffmpeg] = await waitFor(() => {
      const encoding = childPids(parent).filter((pid) => {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return path.basename(argv[0] ?? '') === 'ffmpeg' && argv.some((a) => a.includes(video.videoId));
      });
      return encoding.length > 0 ? encoding : null;
    }, 30_000, 'ffmpeg to encode the video', 20);
    process.kill(parent, 'SIGKILL');
    await transcoder.exited;
    await answered;

    await waitFor(() => !running(ffmpeg!), 2_000, `the orphaned ffmpeg ${ffmpeg} to die`, 20);
  } finally {
    await transcoder?.stop('SIGKILL');
    // When the test fails, do not leave the orphan encoding on a shared machine.
    if (ffmpeg && running(ffmpeg)) process.kill(ffmpeg, 'SIGKILL');
  }
});
