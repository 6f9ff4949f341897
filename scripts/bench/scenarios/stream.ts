/**
 * 3. Delivery: req/s for 1 MiB segments with a valid token (50 connections,
 *    16 segments of one rendition in turn under the token of its playlist, as
 *    a player fetches them) and MB/s for random ranges of the large original,
 *    through the stack's front door — the media edge when nginx is installed
 *    (the stream function grants the token's unit once and audits it, nginx
 *    sends the bytes), else the gateway — against nginx alone serving the same
 *    files from the same directory. Then a token for one segment only (decided
 *    per request), and the peak RSS of the edge's worker plus the stream
 *    process against an nginx worker's.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MIB_BYTES, type BenchContext } from '../context.js';
import { writeRandomFile } from '../media.js';
import { nginxWorkerPeakRssKiB, startNginx, type Nginx } from '../nginx.js';
import { peakRssKiB } from '../proc.js';
import type { Row } from '../table.js';
import { ToolMissing, wrk, type WrkResult } from '../tools.js';
import { uploadFile } from './upload.js';

/** A rendition directory: a playlist (its token grants the directory) and SEGMENTS segments of 1 MiB. */
const RENDITION = 'bench';
const SEGMENTS = 16;
const segmentPath = (i: number) => `${RENDITION}/segment-${String(i).padStart(3, '0')}.m4s`;
const SEGMENT_CONNECTIONS = 50;
const RANGE_CONNECTIONS = 8;
const RANGE_BYTES = 4 * MIB_BYTES;
/** The upload as it was before finalize encrypted it: what nginx sends for the ranges' reference. */
const PLAINTEXT_REFERENCE = 'plaintext-original.mp4';
const THREADS = 2;

/** More than 1 % failed requests makes a figure meaningless: report it as not measured. */
function figureOf(result: WrkResult | null, pick: (r: WrkResult) => number, unit: string) {
  if (!result || result.errors > result.requests * 0.01) return null;
  return { value: pick(result), unit };
}

function describe(result: WrkResult | null, who: string): string {
  if (!result) return '';
  return `${who}: ${result.requests} requests, p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms${result.errors ? `, ${result.errors} errors` : ''}`;
}

export async function benchStream(ctx: BenchContext, videoId: string): Promise<Row[]> {
  const { stack, sizes } = ctx;
  const fileSize = sizes.uploadBytes;
  await mkdir(path.join(stack.videoDir, videoId, RENDITION), { recursive: true });
  for (let i = 0; i < SEGMENTS; i++) await writeRandomFile(path.join(stack.videoDir, videoId, segmentPath(i)), MIB_BYTES);
  const playlist = `${RENDITION}/index.m3u8`;
  await writeFile(path.join(stack.videoDir, videoId, playlist), `#EXTM3U\n${Array.from({ length: SEGMENTS }, (_, i) => `#EXTINF:2,\n${segmentPath(i).slice(RENDITION.length + 1)}\n`).join('')}#EXT-X-ENDLIST\n`);

  // wrk walks the playlist's directory (segments.lua); the signed URL of one segment grants that file only.
  const renditionUrl = await stack.sign(videoId, playlist);
  const oneSegmentUrl = await stack.sign(videoId, segmentPath(0));
  const originalUrl = await stack.sign(videoId, 'original.mp4');
  const shown = (u: string) => `${u.replace(/token=[^&]+/, 'token=$TOKEN')}`;
  const rangeEnv = { BENCH_FILE_SIZE: String(fileSize), BENCH_RANGE_BYTES: String(RANGE_BYTES) };
  const segmentEnv = { BENCH_NAMES: Array.from({ length: SEGMENTS }, (_, i) => path.basename(segmentPath(i))).join(',') };
  const run = { threads: THREADS, seconds: sizes.wrkSeconds };
  const segments = { ...run, connections: SEGMENT_CONNECTIONS, script: 'segments.lua' as const, env: segmentEnv };

  ctx.progress(`3. stream: ${SEGMENTS} segments of 1 MiB in turn, 50 connections`);
  const pvSegment = await wrk({ ...segments, url: `${stack.url}${renditionUrl}`, shownUrl: `<gateway>${shown(renditionUrl)}` });
  ctx.progress('3. stream: one segment under its own token (decided per request)');
  const pvOneSegment = await wrk({ ...run, connections: SEGMENT_CONNECTIONS, script: 'report.lua', url: `${stack.url}${oneSegmentUrl}`, shownUrl: `<gateway>${shown(oneSegmentUrl)}` });
  ctx.progress('3. stream: ranges of the original');
  const pvRanges = await wrk({ ...run, connections: RANGE_CONNECTIONS, script: 'ranges.lua', env: rangeEnv, url: `${stack.url}${originalUrl}`, shownUrl: `<gateway>${shown(originalUrl)}` });
  // The edge's footprint first: once the function sends bytes itself (3a′) its peak is that of the fallback.
  const streamRss = await peakRssKiB(await stack.functionPid('stream'));
  const edgePid = await stack.edgeNginxPid();
  const edgeRss = edgePid ? await nginxWorkerPeakRssKiB(edgePid) : 0;
  ctx.progress('3. stream: the same segments, straight to the stream function');
  const pvDirect = await wrk({ ...segments, url: `${await stack.functionUrl('stream')}${renditionUrl}`, shownUrl: `<stream function>${shown(renditionUrl)}` });
  const front = edgePid ? 'the media edge (the stream function grants, nginx sends)' : 'the local gateway and the stream function (no nginx: no media edge)';

  let nginx: Nginx | null = null;
  let ngSegment: WrkResult | null = null;
  let ngRanges: WrkResult | null = null;
  let ngRss: number | null = null;
  let skipped = '';
  try {
    nginx = await startNginx(ctx.scratch, stack.videoDir);
    ctx.progress('3. nginx: 1 MiB segment, 50 connections');
    ngSegment = await wrk({ ...segments, url: `${nginx.url}/${videoId}/${playlist}`, shownUrl: `<nginx>/${videoId}/${playlist}` });
    ctx.progress('3. nginx: ranges of the plaintext original');
    await copyFile(uploadFile(ctx), path.join(stack.videoDir, videoId, PLAINTEXT_REFERENCE));
    ngRanges = await wrk({ ...run, connections: RANGE_CONNECTIONS, script: 'ranges.lua', env: rangeEnv, url: `${nginx.url}/${videoId}/${PLAINTEXT_REFERENCE}`, shownUrl: `<nginx>/${videoId}/${PLAINTEXT_REFERENCE}` });
    ngRss = await nginx.workerPeakRssKiB();
  } catch (err) {
    if (!(err instanceof ToolMissing)) throw err;
    skipped = `reference skipped: ${err.message}`;
  } finally {
    await nginx?.stop();
  }

  const nginxCommand = nginx ? [nginx.command] : [];
  const notes = (a: WrkResult | null, b: WrkResult | null) => [describe(a, 'PulseVault'), describe(b, 'nginx'), skipped].filter(Boolean).join('; ');
  const referenceName = 'nginx, same files, same directory';
  /** PulseVault's req/s on segments beside nginx's on the same files; the first such row also carries nginx's own command and figures. */
  const segmentRow = (scenario: string, pv: WrkResult, first = false): Row => ({
    scenario,
    pulsevault: figureOf(pv, (r) => r.requestsPerSecond, 'req/s'),
    reference: figureOf(ngSegment, (r) => r.requestsPerSecond, 'req/s'),
    referenceName,
    better: 'higher',
    commands: [pv.command, ...(ngSegment ? [ngSegment.command] : []), ...(first ? nginxCommand : [])],
    note: notes(pv, first ? ngSegment : null),
  });
  return [
    segmentRow(
      `3a. Stream ${SEGMENTS} segments of 1 MiB in turn under their playlist's token (granted and audited), ${SEGMENT_CONNECTIONS} connections, ${sizes.wrkSeconds} s, through ${front}`,
      pvSegment,
      true,
    ),
    segmentRow(`3a′. The same, straight to the stream function's port (the function sends the bytes itself: no edge, no gateway)`, pvDirect),
    segmentRow(`3a″. One 1 MiB segment under a token for that file only (the function decides and audits every request), ${SEGMENT_CONNECTIONS} connections, through ${front}`, pvOneSegment),
    {
      scenario: `3b. Random ${RANGE_BYTES / MIB_BYTES} MiB ranges of the ${fileSize / MIB_BYTES} MiB original (encrypted at rest: the stream function decides each range, the edge's decryption module decrypts it, or the function without the module; nginx sends the plaintext upload, copied beside it) with a valid token, ${RANGE_CONNECTIONS} connections, ${sizes.wrkSeconds} s, through ${edgePid ? 'the media edge (no grant for an encrypted original: nginx passes each request to the stream function, which hands it back)' : front}`,
      pulsevault: figureOf(pvRanges, (r) => r.megabytesPerSecond, 'MB/s'),
      reference: figureOf(ngRanges, (r) => r.megabytesPerSecond, 'MB/s'),
      referenceName: 'nginx sending the plaintext of the same original, same directory',
      better: 'higher',
      commands: [pvRanges.command, ...(ngRanges ? [ngRanges.command] : []), ...nginxCommand],
      note: notes(pvRanges, ngRanges),
    },
    {
      scenario: `3c. Peak RSS (VmHWM) after 3a, 3a″ and 3b (before 3a′): ${edgePid ? 'largest edge nginx worker + ' : ''}the stream process`,
      pulsevault: { value: (edgeRss + streamRss) / 1024, unit: 'MiB' },
      reference: ngRss === null ? null : { value: ngRss / 1024, unit: 'MiB' },
      referenceName: 'largest nginx worker',
      better: 'lower',
      commands: ['grep VmHWM /proc/<pid>/status (stream: GET / → functions.stream.replicas[0].pid; nginx: ps -o pid= --ppid <master>)'],
      note: `stream function ${(streamRss / 1024).toFixed(1)} MiB${edgePid ? `, edge worker ${(edgeRss / 1024).toFixed(1)} MiB` : ''}; nginx runs a master and one worker per core`,
    },
  ];
}
