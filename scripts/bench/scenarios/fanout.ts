/**
 * 8. Transcode fan-out: a 60 s 1080p30 clip with the default ladder in 10 s
 *    chunks (6 of them: 30 s chunks would give two, one per replica, and no
 *    slack for the preview), through the whole pipeline (tus upload, finalize,
 *    queue, connector, transcoder replicas), on 2 transcoder replicas each pinned
 *    to one core against 1 replica on 1 core — two stacks of their own, one after
 *    the other. The chunk and join times the transcoders log feed the model of
 *    docs/transcoding.md (an hour of video at N replicas).
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../../shared/platform/config.js';
import { SEGMENT_SECONDS } from '../../../shared/transcode/ffmpeg-command.js';
import type { BenchContext } from '../context.js';
import { makeClip } from '../media.js';
import { startBenchStack } from '../stack.js';
import type { Row } from '../table.js';
import { commandLine, requireTool, run, timeOnce } from '../tools.js';
import { waitForStatus } from '../videos.js';

const CLIP = { seconds: 60, width: 1920, height: 1080, fps: 30 };
const CHUNK_SEGMENTS = 5;
const HOUR = 3600;

interface FanoutRun {
  wallSeconds: number;
  /** Encode time of each chunk as its transcoder logged it. */
  chunkSeconds: number[];
  previewSeconds: number;
  joinSeconds: number;
}

/** Upload, finalize and wait for `transcoded` on a stack whose transcoder replicas are pinned one per core in `cores`. */
async function timedRun(ctx: BenchContext, clip: string, cores: number[]): Promise<FanoutRun> {
  const scratch = path.join(ctx.scratch, `fanout-${cores.length}`);
  await mkdir(scratch);
  const stack = await startBenchStack(scratch, {
    LOCAL_REPLICAS: `transcoder=${cores.length}`,
    TRANSCODE_CONCURRENCY: String(cores.length),
    TRANSCODE_CHUNK_SEGMENTS: String(CHUNK_SEGMENTS),
  });
  try {
    const pids = await stack.functionPids('transcoder');
    // -a: every thread of the replica; the ffmpeg it spawns inherits the affinity.
    await Promise.all(pids.map((pid, i) => run('taskset', ['-a', '-p', '-c', String(cores[i]), String(pid)])));
    const uploadId = await stack.upload(clip, ctx.sizes.chunkBytes);
    const started = performance.now();
    const videoId = await stack.finalize(uploadId, 'clip.mp4');
    await waitForStatus(stack.videoDir, videoId, ['transcoded'], 60 * 60_000, 100);
    const wallSeconds = (performance.now() - started) / 1000;
    // The replicas' log lines reach the file through the stack's pipes, possibly after meta.json says transcoded.
    const logDeadline = Date.now() + 30_000;
    for (;;) {
      const lines = (await readFile(stack.logFile, 'utf8'))
        .split('\n')
        .filter((l) => l.includes(videoId) && l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg?: string; seconds?: number; joined?: number });
      const chunkSeconds = lines.filter((l) => l.msg === 'chunk transcoded').map((l) => l.seconds!);
      const join = lines.find((l) => l.msg === 'transcoded' && (l.joined ?? 0) > 0);
      const preview = lines.find((l) => l.msg === 'preview published');
      if (chunkSeconds.length >= 2 && join && preview) return { wallSeconds, chunkSeconds, previewSeconds: preview.seconds!, joinSeconds: join.seconds! };
      if (Date.now() > logDeadline) throw new Error(`the log does not show a fanned-out transcode (chunks logged: ${chunkSeconds.length}); is TRANSCODE_CHUNK_SEGMENTS below ${CLIP.seconds / SEGMENT_SECONDS}?`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await stack.stop();
  }
}

export async function benchFanout(ctx: BenchContext): Promise<Row[]> {
  requireTool('taskset');
  const ffmpeg = requireTool('ffmpeg');
  const clip = path.join(ctx.scratch, 'clip-60s-1080p30.mp4');
  ctx.progress('8. generating a 60 s 1080p30 clip');
  const clipCommand = await makeClip(clip, CLIP);
  ctx.progress('8. one transcoder replica on core 0');
  const one = await timedRun(ctx, clip, [0]);
  ctx.progress('8. two transcoder replicas on cores 0 and 1');
  const two = await timedRun(ctx, clip, [0, 1]);
  const audioArgs = ['-hide_banner', '-nostdin', '-loglevel', 'error', '-i', clip, '-vn', '-c:a', 'aac', '-b:a', '128k', '-ac', '2', '-ar', '48000', '-f', 'null', '-'];
  ctx.progress('8. the audio alone, as the join encodes it');
  const audioSeconds = await timeOnce('taskset', ['-c', '0', ffmpeg, ...audioArgs]);

  // The model (docs/transcoding.md): T(N) = max(chunk, (P + C × chunk) / N) + join; preview P and join grow with the duration.
  const config = loadConfig({ MEDIA_ROOT: ctx.scratch }, { require: [] });
  const chunkLength = CHUNK_SEGMENTS * SEGMENT_SECONDS;
  const perChunk = one.chunkSeconds.reduce((a, b) => a + b, 0) / one.chunkSeconds.length;
  const previewHour = (one.previewSeconds / CLIP.seconds) * HOUR;
  const joinHour = (one.joinSeconds / CLIP.seconds) * HOUR;
  const chunksPerHour = Math.ceil(HOUR / chunkLength);
  const hourAt = (n: number) => (Math.max(perChunk, (previewHour + chunksPerHour * perChunk) / n) + joinHour) / 60;
  const model = [1, 2, 8, 32, 120].map((n) => `N=${n}: ${hourAt(n).toFixed(0)} min`).join(', ');
  const pipeline = 'tus upload, POST /uploads/finalize; timed until meta.json status = transcoded (polled every 100 ms); transcoder replicas pinned with taskset -a -p -c <core> <pid>';
  return [
    {
      scenario: '8. Transcode fan-out: 60 s 1080p30, 2 replicas × 1 core vs 1 replica × 1 core',
      pulsevault: { value: two.wallSeconds, unit: 's' },
      reference: { value: one.wallSeconds, unit: 's' },
      referenceName: 'the same pipeline with 1 transcoder replica on 1 core',
      better: 'lower',
      commands: [
        `input: ${clipCommand}`,
        pipeline,
        `TRANSCODE_CHUNK_SEGMENTS=${CHUNK_SEGMENTS} LOCAL_REPLICAS=transcoder=2 TRANSCODE_CONCURRENCY=2 vs TRANSCODE_CHUNK_SEGMENTS=${CHUNK_SEGMENTS} LOCAL_REPLICAS=transcoder=1`,
        commandLine(ffmpeg, audioArgs),
      ],
      note:
        `goal ≤ 0.6×; default ladder, preset ${config.transcode.ffmpegPreset}, ${chunkLength} s chunks (${one.chunkSeconds.length}); ` +
        `1 replica: preview ${one.previewSeconds.toFixed(1)} s, chunks ${one.chunkSeconds.map((s) => s.toFixed(1)).join('/')} s, join ${one.joinSeconds.toFixed(1)} s; ` +
        `2 replicas: preview ${two.previewSeconds.toFixed(1)} s, chunks ${two.chunkSeconds.map((s) => s.toFixed(1)).join('/')} s, join ${two.joinSeconds.toFixed(1)} s; ` +
        `audio alone (encoded once, in the join) ${audioSeconds.toFixed(2)} s; ` +
        `model, an hour of this source in ${chunkLength} s chunks: ${model}`,
    },
  ];
}
