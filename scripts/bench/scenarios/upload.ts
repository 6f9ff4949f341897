/**
 * 1. Upload: tus-js-client through the local gateway in 64 MiB chunks (and
 *    straight to the tus-upload function: what the local gateway costs),
 *    against a minimal Node server piping the same chunks to a file on the same disk.
 * 2. Finalize of that upload, against `openssl dgst -sha256` of the stored file
 *    (the hashing floor: finalize must read every byte once).
 */
import { createReadStream, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { megabytesPerSecond, MIB_BYTES, type BenchContext } from '../context.js';
import { makeLargeVideo } from '../media.js';
import { startServerWorker, workerCommand } from '../processes.js';
import type { Row } from '../table.js';
import { hyperfine, requireTool, run, ToolMissing } from '../tools.js';
import { waitForStatus } from '../videos.js';

/** PATCH the file to the reference server in the same chunks tus-js-client sends. */
async function plainChunkedUpload(port: number, file: string, size: number, chunk: number): Promise<void> {
  for (let offset = 0; offset < size; offset += chunk) {
    const end = Math.min(size, offset + chunk);
    await new Promise<void>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port, method: 'PATCH', path: '/upload.bin', headers: { 'Upload-Offset': String(offset), 'Content-Length': String(end - offset), 'Content-Type': 'application/offset+octet-stream' } },
        (res) => {
          res.resume();
          res.once('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`reference upload server answered ${res.statusCode}`))));
        },
      );
      req.once('error', reject);
      pipeline(createReadStream(file, { start: offset, end: end - 1 }), req).catch(reject);
    });
  }
}

/** The generated upload, in the clear (scenario 3's nginx reference serves a copy of it). */
export const uploadFile = (ctx: BenchContext) => path.join(ctx.scratch, 'upload.mp4');

/** Flush dirty pages first, so one run's writeback does not land in the next run's time. */
const sync = () => run('sync', []);

export async function benchUpload(ctx: BenchContext): Promise<{ rows: Row[]; videoId: string }> {
  const { uploadBytes: size, chunkBytes: chunk } = ctx.sizes;
  const label = `${size / MIB_BYTES} MiB`;
  ctx.progress(`generating a ${label} upload`);
  const file = uploadFile(ctx);
  const made = await makeLargeVideo(file, size, path.join(ctx.scratch, 'upload-clip.mp4'));

  ctx.progress('1. upload through the gateway (tus-js-client)');
  await sync();
  let started = performance.now();
  const uploadId = await ctx.stack.upload(file, chunk);
  const pvSeconds = (performance.now() - started) / 1000;

  ctx.progress('1. the same upload straight to the tus-upload function');
  const direct = await ctx.stack.functionUrl('tus-upload');
  await sync();
  started = performance.now();
  await ctx.stack.upload(file, chunk, direct);
  const directSeconds = (performance.now() - started) / 1000;

  ctx.progress('1. upload to the reference server');
  const refDir = path.join(ctx.scratch, 'reference-upload');
  mkdirSync(refDir);
  const server = await startServerWorker('upload-server', [refDir]);
  await sync();
  started = performance.now();
  try {
    await plainChunkedUpload(server.port, file, size, chunk);
  } finally {
    await server.stop();
  }
  const refSeconds = (performance.now() - started) / 1000;

  ctx.progress('2. finalize');
  await sync();
  started = performance.now();
  const videoId = await ctx.stack.finalize(uploadId, 'bench.mp4');
  const finalizeSeconds = (performance.now() - started) / 1000;
  if (await ctx.stack.hasTranscoder()) {
    ctx.progress('waiting for the upload to be transcoded (so it does not run during the next scenarios)');
    await waitForStatus(ctx.stack.videoDir, videoId, ['transcoded'], 10 * 60_000);
  }

  let openssl: { meanSeconds: number; command: string } | null = null;
  let opensslNote = '';
  try {
    requireTool('openssl');
    // Finalize encrypts (AES-256-GCM chunks, shared/crypto/chunked.ts) while hashing the plaintext: the
    // reference hashes and encrypts the same upload, writing the ciphertext to the same disk.
    ctx.progress('2. openssl dgst -sha256 + openssl enc -aes-256-ctr (hyperfine)');
    const refOut = path.join(ctx.scratch, 'reference-finalize.enc');
    openssl = await hyperfine(
      `openssl dgst -sha256 ${file} && openssl enc -aes-256-ctr -K ${'ab'.repeat(32)} -iv ${'cd'.repeat(16)} -in ${file} -out ${refOut}`,
      ctx.sizes.hyperfineRuns,
      ctx.scratch,
    );
  } catch (err) {
    if (!(err instanceof ToolMissing)) throw err;
    opensslNote = `skipped: ${err.message}`;
  }

  const input = `input: ${made}`;
  return {
    videoId,
    rows: [
      {
        scenario: `1. Upload ${label}, tus-js-client via the gateway, ${chunk / MIB_BYTES} MiB chunks`,
        pulsevault: { value: megabytesPerSecond(size, pvSeconds), unit: 'MB/s' },
        reference: { value: megabytesPerSecond(size, refSeconds), unit: 'MB/s' },
        referenceName: 'minimal Node server piping each chunk to a file on the same disk',
        better: 'higher',
        commands: [input, `tus-js-client Upload(fs.createReadStream(file), {endpoint: <gateway>/uploads, chunkSize: ${chunk}}) (scripts/bench/stack.ts)`, `${workerCommand('upload-server', ['<scratch>/reference-upload'])}; ${size / chunk} × PATCH /upload.bin with Upload-Offset (scripts/bench/scenarios/upload.ts)`],
        note: `one run each, \`sync\` before each; ${pvSeconds.toFixed(2)} s vs ${refSeconds.toFixed(2)} s`,
      },
      {
        scenario: `1′. The same, straight to the tus-upload function's port (no local gateway; OpenFaaS's gateway takes its place in production)`,
        pulsevault: { value: megabytesPerSecond(size, directSeconds), unit: 'MB/s' },
        reference: { value: megabytesPerSecond(size, refSeconds), unit: 'MB/s' },
        referenceName: 'minimal Node server piping each chunk to a file on the same disk',
        better: 'higher',
        commands: [`tus-js-client Upload(fs.createReadStream(file), {endpoint: <tus-upload function>/uploads, chunkSize: ${chunk}}) (scripts/bench/stack.ts)`],
        note: `one run, \`sync\` before; ${directSeconds.toFixed(2)} s`,
      },
      {
        scenario: `2. Finalize of that ${label} upload (probe, encrypt + sha256, meta, publish, audit, enqueue; the stack's development MEDIA_KEK)`,
        pulsevault: { value: finalizeSeconds, unit: 's' },
        reference: openssl ? { value: openssl.meanSeconds, unit: 's' } : null,
        referenceName: 'openssl dgst -sha256 + openssl enc -aes-256-ctr of the same upload',
        better: 'lower',
        commands: [`POST /uploads/finalize {uploadId, filename} (one request, timed by the harness)`, ...(openssl ? [openssl.command] : [])],
        note: [`finalize: one run; openssl: mean of ${ctx.sizes.hyperfineRuns} runs after a warm-up (file in page cache for both)`, opensslNote].filter(Boolean).join('; '),
      },
    ],
  };
}
