/**
 * 5. Transcode: wall time from finalize to `transcoded` for a generated 1080p30
 *    clip with the default ladder, against (a) the transcoder's own ffmpeg
 *    command run by hand (the pipeline's overhead: queue, connector, lease,
 *    meta updates, poster, playlists, publish) and (b) one ffmpeg per rung,
 *    one after another (what the single-pass split design saves). Plus the
 *    realtime factor (clip seconds per wall second), the cost of CENC
 *    packaging, and the delivery of the ladder's own CENC segments.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../../shared/platform/config.js';
import { probe } from '../../../shared/video/probe.js';
import { buildEncodeCommand, encodeOptionsFor } from '../../../shared/transcode/ffmpeg-command.js';
import { encryptRenditions } from '../../../shared/transcode/encrypt-renditions.js';
import { MASTER_NAME } from '../../../shared/transcode/playlists.js';
import { OUTPUT_DIR } from '../../../shared/transcode/transcoder.js';
import { newId } from '../../../shared/platform/ids.js';
import type { BenchContext } from '../context.js';
import { makeClip } from '../media.js';
import { startNginx, type Nginx } from '../nginx.js';
import type { Row } from '../table.js';
import { commandLine, requireTool, timeOnce, ToolMissing, wrk, type WrkResult } from '../tools.js';
import { waitForStatus } from '../videos.js';

const CLIP = { width: 1920, height: 1080, fps: 30 };

export async function benchTranscode(ctx: BenchContext): Promise<Row[]> {
  const { stack, sizes } = ctx;
  const ffmpeg = requireTool('ffmpeg');
  const seconds = sizes.clipSeconds;
  const clip = path.join(ctx.scratch, 'clip-1080p30.mp4');
  ctx.progress(`5. generating a ${seconds} s 1080p30 clip`);
  const clipCommand = await makeClip(clip, { seconds, ...CLIP });

  ctx.progress('5. upload, finalize and wait for transcoded');
  const uploadId = await stack.upload(clip, sizes.chunkBytes);
  const started = performance.now();
  const videoId = await stack.finalize(uploadId, 'clip.mp4');
  const meta = await waitForStatus(stack.videoDir, videoId, ['transcoded'], 30 * 60_000, 100);
  const pvSeconds = (performance.now() - started) / 1000;

  // The command the transcoder ran: the same planning from the same defaults (the stack sets no transcode variables).
  const config = loadConfig({ MEDIA_ROOT: stack.mediaRoot }, { require: [] });
  const probed = await probe(clip);
  const outDir = path.join(ctx.scratch, 'by-hand');
  await mkdir(outDir);
  const options = encodeOptionsFor(config, probed, ['h264'], clip, outDir);
  const single = buildEncodeCommand(options).args;
  ctx.progress('5. the same ffmpeg command by hand');
  const handSeconds = await timeOnce(ffmpeg, single);
  ctx.progress('5. CENC-encrypting what it wrote (encrypted renditions)');
  const encryptStarted = performance.now();
  await encryptRenditions(outDir, newId(), randomBytes(16));
  const encryptSeconds = (performance.now() - encryptStarted) / 1000;

  const delivery = await benchCencDelivery(ctx, videoId);

  ctx.progress(`5. one ffmpeg per rung (${options.rungs.length} rungs)`);
  const perRung: string[][] = [];
  for (const [i, rung] of options.rungs.entries()) {
    const dir = path.join(ctx.scratch, `rung-${rung.name}`);
    await mkdir(dir);
    // Audio is encoded once, with the first rung, as the single pass does.
    perRung.push(buildEncodeCommand({ ...options, outDir: dir, rungs: [rung], hasAudio: probed.hasAudio && i === 0 }).args);
  }
  let rungSeconds = 0;
  for (const args of perRung) rungSeconds += await timeOnce(ffmpeg, args);

  const ladder = options.rungs.map((r) => `${r.name} ${r.width}x${r.height}`).join(', ');
  const input = `input: ${clipCommand}`;
  const pipeline = `tus upload, then POST /uploads/finalize; timed until meta.json status = transcoded (polled every 100 ms through MediaStore.read)`;
  const rungCommands = perRung.map((args) => commandLine(ffmpeg, args));
  const common = `${seconds} s 1080p30 clip${ctx.mode === 'quick' ? ' (quick mode; --full uses the 20 s clip the issue names)' : ''}, ladder ${ladder}, preset ${config.transcode.ffmpegPreset}, renditions published: ${meta.renditions.join(',')}`;
  return [
    {
      scenario: `5a. Transcode wall time, finalize → transcoded, default ladder`,
      pulsevault: { value: pvSeconds, unit: 's' },
      reference: { value: handSeconds, unit: 's' },
      referenceName: "the transcoder's ffmpeg command run by hand",
      better: 'lower',
      commands: [input, pipeline, commandLine(ffmpeg, single)],
      note: `${common}; one run each`,
    },
    {
      scenario: '5b. Single-pass ladder vs one ffmpeg per rung',
      pulsevault: { value: pvSeconds, unit: 's' },
      reference: { value: rungSeconds, unit: 's' },
      referenceName: `one ffmpeg per rung, ${perRung.length} runs in sequence (sum)`,
      better: 'lower',
      commands: [pipeline, ...rungCommands],
      note: `by-hand single pass vs per-rung: ${(handSeconds / rungSeconds).toFixed(2)}×`,
    },
    {
      scenario: '5c. Realtime factor (clip seconds per wall-clock second)',
      pulsevault: { value: seconds / pvSeconds, unit: '× realtime' },
      reference: { value: seconds / handSeconds, unit: '× realtime' },
      referenceName: 'the same ffmpeg command by hand',
      better: 'higher',
      commands: [pipeline, commandLine(ffmpeg, single)],
    },
    {
      scenario: '5d. Encrypted renditions: the ffmpeg command + CENC packaging vs the ffmpeg command alone',
      pulsevault: { value: handSeconds + encryptSeconds, unit: 's' },
      reference: { value: handSeconds, unit: 's' },
      referenceName: "the transcoder's ffmpeg command run by hand (clear segments, as before encryption at rest)",
      better: 'lower',
      commands: [commandLine(ffmpeg, single), 'then encryptRenditions(outDir) in this process (shared/transcode/encrypt-renditions.ts): every init and media segment rewritten, manifest and playlists signalled'],
      note: `CENC packaging alone: ${encryptSeconds.toFixed(2)} s; 5a's pipeline includes it (the bench stack has a development MEDIA_KEK)`,
    },
    delivery,
  ];
}

const SEGMENT_CONNECTIONS = 50;

/**
 * 5e. The transcoded video's own CENC segments (3a uses random files): every media segment of
 * its published directory in turn under the master's token, through the stack's front door, against
 * nginx sending the same files.
 */
async function benchCencDelivery(ctx: BenchContext, videoId: string): Promise<Row> {
  const { stack, sizes } = ctx;
  const dir = path.join(stack.videoDir, videoId, OUTPUT_DIR);
  const names = (await readdir(dir)).filter((n) => /^seg_\d+_\d+\.m4s$/.test(n)).sort();
  // CENC signals itself in every init segment (a protected sample entry with its tenc box).
  const inits = (await readdir(dir)).filter((n) => /^init_\d+\.m4s$/.test(n));
  for (const init of inits) if (!(await readFile(path.join(dir, init))).includes('tenc')) throw new Error(`${init} is not CENC-encrypted (no tenc box)`);
  const master = `${OUTPUT_DIR}/${MASTER_NAME}`;
  const signed = await stack.sign(videoId, master);
  const run = { threads: 2, seconds: sizes.wrkSeconds, connections: SEGMENT_CONNECTIONS, script: 'segments.lua' as const, env: { BENCH_NAMES: names.join(',') } };
  ctx.progress(`5. the ladder's ${names.length} CENC segments in turn, ${SEGMENT_CONNECTIONS} connections`);
  const pv = await wrk({ ...run, url: `${stack.url}${signed}`, shownUrl: `<gateway>${signed.replace(/token=[^&]+/, 'token=$TOKEN')}` });
  let ng: WrkResult | null = null;
  let nginx: Nginx | null = null;
  let skipped = '';
  try {
    nginx = await startNginx(ctx.scratch, stack.videoDir);
    ng = await wrk({ ...run, url: `${nginx.url}/${videoId}/${master}`, shownUrl: `<nginx>/${videoId}/${master}` });
  } catch (err) {
    if (!(err instanceof ToolMissing)) throw err;
    skipped = `reference skipped: ${err.message}`;
  } finally {
    await nginx?.stop();
  }
  const okFigure = (r: WrkResult | null) => (r && r.errors <= r.requests * 0.01 ? { value: r.requestsPerSecond, unit: 'req/s' } : null);
  const mean = (r: WrkResult) => (r.bytes / Math.max(1, r.requests) / 1024).toFixed(0);
  return {
    scenario: `5e. The transcoded ladder's own CENC segments (${names.length} of ${inits.length} streams) in turn under the master's token, ${SEGMENT_CONNECTIONS} connections, ${sizes.wrkSeconds} s, through the stack's front door`,
    pulsevault: okFigure(pv),
    reference: okFigure(ng),
    referenceName: 'nginx, same files, same directory',
    better: 'higher',
    commands: [pv.command, ...(ng ? [ng.command] : []), ...(nginx ? [nginx.command] : [])],
    note: [`PulseVault: ${pv.requests} requests (mean ${mean(pv)} KiB), p99 ${pv.p99Ms.toFixed(1)} ms${pv.errors ? `, ${pv.errors} errors` : ''}`, ng ? `nginx: ${ng.requests} requests, p99 ${ng.p99Ms.toFixed(1)} ms` : '', skipped].filter(Boolean).join('; '),
  };
}
