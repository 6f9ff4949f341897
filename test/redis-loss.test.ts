/**
 * Redis loses its data (killed without persistence, restarted empty on the same
 * port) in the middle of a stream of uploads and finalizes: the real local
 * stack heals by itself — every finalized video ends `transcoded`, no manual
 * step — and health shows the outage while it lasts.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MediaStore } from '../shared/video/store.js';
import { RECOVERY_AUDIT_REASON } from '../shared/transcode/recovery.js';
import { readAuditEntries } from './helpers/audit.js';
import { makeClip } from './helpers/media.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { tusUpload, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';

const UPLOADS = 8;
let stack: TestStack;
let clip: Buffer;
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-redis-loss-'));

type Health = { status: string; redis: string };

beforeAll(async () => {
  [stack, clip] = await Promise.all([
    startStack({ env: { RENDITIONS: '240p', FFMPEG_PRESET: 'ultrafast', TRANSCODE_LEASE_SECONDS: '5', TRANSCODE_RETRY_BASE_SECONDS: '1', REDIS_COMMAND_TIMEOUT_MS: '1000' } }),
    makeClip(path.join(tmp, 'clip.mp4'), { seconds: 1 }).then((f) => readFileSync(f)),
  ]);
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await stack?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** The connector's count of empty Redis instances found (its first start on a new Redis counts too). */
async function dataLosses(): Promise<number> {
  const metrics = await (await fetch(`${stack.url}/metrics`)).text();
  return Number(/^pulsevault_redis_data_loss_total\{[^}]*\} (\d+)/m.exec(metrics)?.[1] ?? 0);
}

/** Upload and finalize one video as a client with retries does; resolves with its id once finalize said 200. */
async function uploadAndFinalize(): Promise<string> {
  const url = await tusUpload(`${stack.url}/uploads`, clip, { retryDelays: Array.from({ length: 40 }, () => 250) });
  const res = await waitFor(async () => {
    const r = await fetch(`${stack.url}/uploads/finalize`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ uploadId: uploadIdOf(url), filename: 'visit.mp4', userId: 'clinician-7', metadata: {} }),
    });
    if (r.status !== 200) throw new Error(`finalize answered ${r.status}: ${await r.text()}`); // waitFor reports the last one
    return r;
  }, 30_000, 'finalize to succeed', 250);
  return ((await res.json()) as { videoId: string }).videoId;
}

it('every finalized video ends transcoded after Redis is killed and restarted empty mid-stream', async () => {
  const store = new MediaStore(path.join(stack.mediaRoot, 'videos'));
  // A burst: one transcoder works through them one by one, so jobs are still queued when Redis dies.
  const before = await Promise.all(Array.from({ length: UPLOADS / 2 }, () => uploadAndFinalize()));
  const lossesBefore = await dataLosses();
  await stack.redis.kill();

  // While Redis is away, health says so (the stack's GET / and each function's /_/health).
  const health = await waitFor(async () => {
    const h = (await (await fetch(`${stack.url}/`)).json()) as Health;
    return h.redis === 'down' ? h : null;
  }, 10_000, 'GET / to report Redis down');
  expect(health.status).toBe('degraded');
  const transcoderHealth = (await (await fetch(`${stack.url}/function/transcoder/_/health`)).json()) as Health;
  expect(transcoderHealth).toMatchObject({ status: 'degraded', redis: 'down' });

  // Clients keep going through the outage (retrying), and Redis comes back with nothing in it.
  const during = Array.from({ length: UPLOADS / 2 }, () => uploadAndFinalize());
  await stack.redis.start();
  const after = await Promise.all(during);

  const videos = [...before, ...after];
  expect(new Set(videos).size).toBe(UPLOADS);
  for (const videoId of videos) {
    await waitFor(async () => (await store.read(videoId)).status === 'transcoded', 90_000, `video ${videoId} to be transcoded`, 200);
  }
  await waitFor(async () => ((await (await fetch(`${stack.url}/`)).json()) as Health).status === 'ok', 10_000, 'GET / to be ok again');

  // The jobs Redis lost came back from meta.json, each audited once, and the loss was counted.
  const requeued = readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.action === 'transcode.requeued');
  for (const e of requeued) expect(e.reason).toBe(RECOVERY_AUDIT_REASON);
  const perVideo = new Map<string, number>();
  for (const e of requeued) perVideo.set(e.videoId!, (perVideo.get(e.videoId!) ?? 0) + 1);
  expect([...perVideo.values()].every((n) => n === 1)).toBe(true);
  expect(requeued.length).toBeGreaterThanOrEqual(1);
  expect(await dataLosses()).toBe(lossesBefore + 1);
});
