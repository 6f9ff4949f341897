/**
 * Rollouts and scale-in: a function that gets SIGTERM lets in-flight requests run for as long
 * as its own write_timeout/exec_timeout allows (not a fixed SHUTDOWN_TIMEOUT_SECONDS). Where the
 * platform kills it sooner (OpenFaaS CE leaves Kubernetes' 30 s grace), the cut is harmless:
 * tus resumes from the stored offset on another replica with no byte lost, and a player
 * re-requests the rest of its range.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { MediaStore } from '../shared/video/store.js';
import { startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_HMAC_SECRET } from './helpers/secrets.js';
import { createUpload, offsetOf, patch, streamingPatch, uploadIdOf } from './helpers/uploads.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';
import { STACK_START_DEADLINE_MS } from './helpers/stack.js';

/** The fixed drain the runtime used to have; the requests below outlive it after SIGTERM. */
const SHUTDOWN_TIMEOUT_SECONDS = 1;
const OUTLIVE_MS = SHUTDOWN_TIMEOUT_SECONDS * 1000 + 1500;
/** Large enough that loopback socket buffers cannot hold it: the server is still sending when the client pauses. */
const ORIGINAL_BYTES = 48 * 1024 * 1024;

let redis: TestRedis;
let mediaRoot: string;
let audit: { stop(): Promise<void> };
let videoId: string;
let original: Buffer;
const started: FunctionProcess[] = [];
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });

/** A function with stack.yml-style workload timeouts far longer than the old fixed drain. */
async function start(name: string): Promise<FunctionProcess> {
  const fp = await startFunctionProcess(name, {
    MEDIA_ROOT: mediaRoot,
    REDIS_URL: redis.url,
    SHUTDOWN_TIMEOUT_SECONDS: String(SHUTDOWN_TIMEOUT_SECONDS),
    read_timeout: '60s',
    write_timeout: '60s',
    exec_timeout: '60s',
    TMPDIR: mkdtempSync(path.join(mediaRoot, 'tmp-')),
    LOG_LEVEL: 'debug', // the most the runtime ever logs: still no token (checked below)
  });
  started.push(fp);
  return fp;
}

const signedTokens: string[] = [];

/** GET a range of the original and hand back the response before reading it, so the test controls the pace. */
function openRange(base: string, from: number): Promise<import('node:http').IncomingMessage> {
  const token = codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 120, scope: 'original.mp4' });
  signedTokens.push(token);
  return new Promise((resolve, reject) => {
    const req = request(`${base}/media/videos/${videoId}/original.mp4?token=${token}`, { headers: { Range: `bytes=${from}-` } }, resolve);
    req.on('error', reject);
    req.end();
  });
}

/** Read the whole body; `onFirst` runs after the first chunk, with the stream paused until it resolves. */
async function readBody(res: import('node:http').IncomingMessage, onFirst: () => Promise<void> = async () => {}): Promise<{ bytes: Buffer; complete: boolean }> {
  const chunks: Buffer[] = [];
  let first = true;
  try {
    for await (const chunk of res) {
      chunks.push(chunk as Buffer);
      if (first) {
        first = false;
        await onFirst();
      }
    }
    return { bytes: Buffer.concat(chunks), complete: res.complete };
  } catch {
    return { bytes: Buffer.concat(chunks), complete: false };
  }
}

beforeAll(async () => {
  redis = await startRedis();
  mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-drain-'));
  audit = await startAuditWriter(redis.url, path.join(mediaRoot, 'audit'));
  const store = new MediaStore(path.join(mediaRoot, 'videos'));
  videoId = (await addVideo(store, null, { status: 'transcoded' })).videoId;
  original = randomBytes(ORIGINAL_BYTES);
  writeFileSync(path.join(store.dir(videoId), 'original.mp4'), original);
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop('SIGKILL')));
  await audit?.stop();
  await redis?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

describe('SIGTERM drains for as long as the function’s own timeouts allow', () => {
  it('a long PATCH and a long range request, in flight at SIGTERM, both complete; then the process exits 0', async () => {
    const [tus, stream] = await Promise.all([start('tus-upload'), start('stream')]);

    const source = randomBytes(2 * 1024 * 1024);
    const half = source.length / 2;
    const url = await createUpload(`${tus.url}/uploads`, source.length);
    const upload = streamingPatch(url, 0);
    upload.send(source.subarray(0, half));
    await waitFor(() => statSync(path.join(mediaRoot, 'uploads', uploadIdOf(url))).size === half, 10_000, 'the first half on disk');

    const range = await openRange(stream.url, 0);
    expect(range.statusCode).toBe(206);
    const body = readBody(range, async () => {
      // Both requests are mid-flight: stop both processes, then keep the requests going past the old fixed bound.
      tus.process.kill('SIGTERM');
      stream.process.kill('SIGTERM');
      await waitFor(() => tus.output().includes('draining in-flight requests') && stream.output().includes('draining in-flight requests'), 10_000, 'both draining');
      await sleep(OUTLIVE_MS);
      upload.send(source.subarray(half));
      upload.end();
    });

    const patched = await upload.response;
    expect(patched?.status).toBe(204);
    expect(patched?.headers.get('upload-offset')).toBe(String(source.length));
    expect(readFileSync(path.join(mediaRoot, 'uploads', uploadIdOf(url))).equals(source)).toBe(true);
    const { bytes, complete } = await body;
    expect(complete).toBe(true);
    expect(bytes.length).toBe(original.length);
    expect(bytes.equals(original)).toBe(true);
    expect(await tus.exited).toBe(0);
    expect(await stream.exited).toBe(0);
    // The runtime logs the route, never the URI: the signed token is in no log line, even at debug.
    expect(stream.output()).toContain('"route":"GET /media/videos/:videoId/:path"');
    for (const token of signedTokens) expect(stream.output()).not.toContain(token.slice(3, 40));
  });
});

describe('where the platform’s grace runs out first (SIGKILL), the cut is harmless', () => {
  it('tus resumes from the stored offset on another replica, no byte lost', async () => {
    const [first, second] = await Promise.all([start('tus-upload'), start('tus-upload')]);
    const source = randomBytes(2 * 1024 * 1024);
    const url = await createUpload(`${first.url}/uploads`, source.length);
    const file = path.join(mediaRoot, 'uploads', uploadIdOf(url));
    const upload = streamingPatch(url, 0);
    upload.send(source.subarray(0, source.length / 2));
    await waitFor(() => statSync(file).size > 0, 10_000, 'bytes on disk');
    expect(await first.stop('SIGKILL')).toBeNull();
    upload.end();
    expect((await upload.response)?.status ?? 'cut').not.toBe(204);

    const onSecond = `${second.url}${new URL(url).pathname}`;
    const offset = await waitFor(async () => {
      const res = await patch(onSecond, await offsetOf(onSecond), Buffer.alloc(0));
      return res.status === 204 ? Number(res.headers.get('upload-offset')) : null; // 423/409 while the dead replica's lock lapses
    }, 30_000, 'the upload lock of the killed replica to lapse');
    expect(offset).toBe(statSync(file).size);
    expect(readFileSync(file).equals(source.subarray(0, offset))).toBe(true);
    expect((await patch(onSecond, offset, source.subarray(offset))).status).toBe(204);
    expect(readFileSync(file).equals(source)).toBe(true);
  });

  it('a player re-requests the rest of its range from another replica and gets exactly the missing bytes', async () => {
    const [first, second] = await Promise.all([start('stream'), start('stream')]);
    const cut = await readBody(await openRange(first.url, 0), async () => void (await first.stop('SIGKILL')));
    expect(cut.complete).toBe(false);
    expect(cut.bytes.length).toBeLessThan(original.length);
    const rest = await openRange(second.url, cut.bytes.length);
    expect(rest.statusCode).toBe(206);
    expect(rest.headers['content-range']).toBe(`bytes ${cut.bytes.length}-${original.length - 1}/${original.length}`);
    const { bytes } = await readBody(rest);
    expect(Buffer.concat([cut.bytes, bytes]).equals(original)).toBe(true);
  });
});
