/**
 * Crash safety of disposal: the videos function is killed (SIGKILL, by the test's own handler
 * wrapper, helpers/crashing-videos.mjs) before each disposal step of a DELETE. In between, the
 * video either still plays whole through the real stream and metadata functions or is refused by
 * both with 410; then a restart (its start-up sweep) and a retried DELETE finish the disposal.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { DISPOSAL_STEPS, type DisposalStep } from '../shared/lifecycle/dispose.js';
import { DELETED_MARK } from '../shared/lifecycle/tombstone.js';
import { MediaStore, metaLockKey } from '../shared/video/store.js';
import { readAuditEntries, startAuditWriter } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_HMAC_SECRET } from './helpers/secrets.js';

const JWT_SECRET = 'lifecycle-crash-jwt-secret-0123456789abcdef';
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });

let redis: TestRedis;
let root: string;
let auditWriter: { stop(): Promise<void> };
let env: Record<string, string>;
let stream: FunctionProcess;
let metadata: FunctionProcess;
let admin: Record<string, string>;
const processes: FunctionProcess[] = [];

async function start(name: string, extra: Record<string, string> = {}, handler?: string): Promise<FunctionProcess> {
  const p = await startFunctionProcess(name, { ...env, ...extra }, { handler });
  processes.push(p);
  return p;
}

beforeAll(async () => {
  redis = await startRedis();
  root = mkdtempSync(path.join(tmpdir(), 'pv-dispose-crash-'));
  auditWriter = await startAuditWriter(redis.url, path.join(root, 'audit'));
  env = { REDIS_URL: redis.url, MEDIA_ROOT: root, AUTH_JWT_SECRET: JWT_SECRET };
  [stream, metadata] = await Promise.all([start('stream'), start('metadata')]);
  const jwt = await new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('root').setExpirationTime('10m').sign(new TextEncoder().encode(JWT_SECRET));
  admin = { Authorization: `Bearer ${jwt}` };
}, 120_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')));
  await auditWriter?.stop();
  await redis?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

const videoDir = () => path.join(root, 'videos');
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const token = (videoId: string, scope: string) => codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 240, scope });
const deleteVideo = (base: string, videoId: string) => fetch(`${base}/media/videos/${videoId}?reason=recorded_in_error`, { method: 'DELETE', headers: admin });
const deletions = (videoId: string) => readAuditEntries(path.join(root, 'audit')).filter((e) => e.action === 'video.deleted' && e.videoId === videoId).length;

/** What every reader answers for the video: the original's bytes, the HLS master and the metadata. */
async function readers(videoId: string): Promise<Response[]> {
  return Promise.all([
    fetch(`${stream.url}/media/videos/${videoId}/original.mp4?token=${token(videoId, 'original.mp4')}`),
    fetch(`${stream.url}/media/videos/${videoId}/hls/master.m3u8?token=${token(videoId, 'hls/')}`),
    fetch(`${metadata.url}/media/videos/${videoId}/metadata?token=${token(videoId, 'original.mp4')}`, { headers: admin }),
  ]);
}

async function crashAt(step: DisposalStep, videoId: string): Promise<void> {
  const doomed = await start('videos', { DISPOSAL_CRASH_AT: step }, 'test/helpers/crashing-videos.mjs');
  await expect(deleteVideo(doomed.url, videoId)).rejects.toThrow();
  expect(await doomed.exited).toBeNull(); // killed by a signal, not an orderly exit
  expect(doomed.process.signalCode).toBe('SIGKILL');
  // The killed holder's meta.json lock would expire within its TTL; skip that wait.
  await redis.client().del(metaLockKey(videoId));
}

describe('DELETE killed before each disposal step', () => {
  it.each(DISPOSAL_STEPS.map((s) => [s]))('before %s: plays whole or is refused everywhere; the restart sweep and a retry finish it', async (step) => {
    const v = await makeVideo(videoDir());
    const original = readFileSync(path.join(v.dir, 'original.mp4'));
    const filesBefore = readdirSync(v.dir).sort();
    await crashAt(step, v.videoId);

    const marked = readdirSync(v.dir).includes(DELETED_MARK);
    // Nothing is removed before the mark: a crash up to `mark` leaves the video untouched.
    expect(marked, step).toBe(DISPOSAL_STEPS.indexOf(step) > DISPOSAL_STEPS.indexOf('mark'));
    const answers = await readers(v.videoId);
    if (marked) {
      for (const res of answers) {
        expect(res.status, res.url).toBe(410);
        expect(await res.json(), res.url).toMatchObject({ error: 'video_deleted' });
      }
    } else {
      expect(answers.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(sha256(Buffer.from(await answers[0]!.arrayBuffer()))).toBe(sha256(original));
      expect(await answers[1]!.text()).toMatch(/^#EXTM3U/);
      expect(await answers[2]!.json()).toMatchObject({ videoId: v.videoId, metadata: { title: 'PHI-title' } });
      expect(readdirSync(v.dir).sort()).toEqual(filesBefore);
      expect((await new MediaStore(videoDir()).read(v.videoId)).status).toBe('transcoded');
    }

    // The restart's start-up sweep finishes what the mark started; an unmarked video it leaves alone.
    const restarted = await start('videos');
    const store = new MediaStore(videoDir());
    if (marked) {
      expect(readdirSync(v.dir).sort()).toEqual([DELETED_MARK, 'meta.json']);
      expect((await store.read(v.videoId)).deletion?.disposedAt).toEqual(expect.any(String));
    } else {
      expect(readdirSync(v.dir).sort()).toEqual(filesBefore);
    }
    // A retried DELETE finishes it too, or answers the same tombstone.
    const retry = await deleteVideo(restarted.url, v.videoId);
    expect(retry.status).toBe(200);
    expect(await retry.json()).toMatchObject({ videoId: v.videoId, status: 'deleted', reason: 'recorded_in_error', disposedAt: expect.any(String) });
    expect(readdirSync(v.dir).sort()).toEqual([DELETED_MARK, 'meta.json']);
    const tombstone = await store.read(v.videoId); // checksum verified
    expect(tombstone).toMatchObject({ status: 'deleted', checksum: v.meta.checksum, deletion: { reason: 'recorded_in_error', disposedAt: expect.any(String) } });
    for (const res of await readers(v.videoId)) expect(res.status, res.url).toBe(410);
    // The audit entry is at-least-once: only a crash between it and the mark repeats it.
    expect(deletions(v.videoId)).toBe(step === 'mark' ? 2 : 1);
    await restarted.stop();
  });
});
