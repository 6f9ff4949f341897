/**
 * Crash safety of finalize: the process is killed (SIGKILL, by the test's own
 * handler wrapper, helpers/crashing-finalize.mjs) right after each step, then a fresh process starts and its
 * start-up recovery must finish the job: one complete video, no lost upload,
 * and nothing half-made visible to readers in between. With a MEDIA_KEK too: every step's kill
 * on one volume, one restart finishing them all, and no plaintext of the media in VIDEO_DIR at any point.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEncryptedFile, plaintextChecksum } from '../shared/crypto/chunked.js';
import { FINALIZE_STEPS, type FinalizeStep } from '../shared/finalize/finalizer.js';
import { SecretKek } from '../shared/keys/kek.js';
import { VideoKeys } from '../shared/keys/video-keys.js';
import { isVideoId, MediaStore } from '../shared/video/store.js';
import { TRANSCODE_STREAM } from '../shared/transcode/queue.js';
import { readAuditEntries, startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { createUpload, finalize, patch, sha256, TUS, uploadIdOf } from './helpers/uploads.js';

let redis: TestRedis;
let clip: Buffer;
let auditDir: string;
let auditWriter: { stop(): Promise<void> };
const roots: string[] = [];
const processes: FunctionProcess[] = [];

async function start(name: string, env: Record<string, string>, handler?: string): Promise<FunctionProcess> {
  const p = await startFunctionProcess(name, { REDIS_URL: redis.url, ...env }, { handler });
  processes.push(p);
  return p;
}

function tempDir(base: string, prefix: string): string {
  const dir = mkdtempSync(path.join(base, prefix));
  roots.push(dir);
  return dir;
}

beforeAll(async () => {
  redis = await startRedis();
  // One sequencer for every volume of this file: record() waits for it to make entries durable.
  auditDir = path.join(tempDir(tmpdir(), 'pv-crash-audit-'), 'audit');
  auditWriter = await startAuditWriter(redis.url, auditDir);
  clip = readFileSync(await makeClip(path.join(tempDir(tmpdir(), 'pv-crash-clip-'), 'clip.mp4'), { seconds: 1 }));
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')));
  await auditWriter?.stop();
  await redis?.close();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

interface Volume {
  env: Record<string, string>;
  /** The vault's keys when the volume has a MEDIA_KEK. */
  keys: VideoKeys | null;
  uploadDir: string;
  videoDir: string;
  tus: FunctionProcess;
}

async function volume(uploadBase = tmpdir(), kek: Buffer | null = null): Promise<Volume> {
  const mediaRoot = tempDir(tmpdir(), 'pv-crash-');
  const uploadDir = tempDir(uploadBase, 'pv-crash-uploads-');
  const env: Record<string, string> = { MEDIA_ROOT: mediaRoot, UPLOAD_DIR: uploadDir, ...(kek ? { MEDIA_KEK: `k1:${kek.toString('base64')}` } : {}) };
  const keys = kek ? new VideoKeys(path.join(mediaRoot, 'keys'), new SecretKek({ id: 'k1', key: kek })) : null;
  return { env, keys, uploadDir, videoDir: path.join(mediaRoot, 'videos'), tus: await start('tus-upload', env) };
}

async function upload(v: Volume): Promise<string> {
  const url = await createUpload(`${v.tus.url}/uploads`, clip.length);
  expect((await patch(url, 0, clip)).status).toBe(204);
  return uploadIdOf(url);
}

const body = (uploadId: string) => ({ uploadId, filename: 'scan.mp4', userId: 'u-crash', metadata: { title: 't' } });

/** What a reader may see: every video dir is complete, and the upload's bytes exist exactly once. */
async function assertConsistent(v: Volume, uploadId: string): Promise<void> {
  const store = new MediaStore(v.videoDir, null, v.keys);
  const published = existsSync(v.videoDir) ? readdirSync(v.videoDir).filter(isVideoId) : [];
  const ours: string[] = [];
  for (const videoId of published) {
    const meta = await store.read(videoId); // throws on a missing or corrupt meta.json
    const original = path.join(v.videoDir, videoId, meta.original);
    expect(await isEncryptedFile(original)).toBe(v.keys !== null);
    expect((await plaintextChecksum(original, videoId, async () => v.keys!.dataKey(videoId))).checksum).toBe(sha256(clip));
    if (meta.uploadId === uploadId) ours.push(path.join(v.videoDir, videoId, meta.original));
  }
  const staged = existsSync(path.join(v.videoDir, '.staging'))
    ? readdirSync(path.join(v.videoDir, '.staging')).map((d) => path.join(v.videoDir, '.staging', d, 'original.mp4'))
    : [];
  const copies = [path.join(v.uploadDir, uploadId), ...staged, ...ours].filter((f) => existsSync(f));
  expect(copies).toHaveLength(1);
  if (v.keys) expectNoPlaintextMedia(v.videoDir);
}

/** No file under `dir` (staging, journals, leftovers included) holds a stretch of the clip. */
function expectNoPlaintextMedia(dir: string): void {
  const sample = clip.subarray(clip.length - 2048, clip.length - 1024);
  for (const entry of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const file = path.join(dir, entry);
    if (!statSync(file).isFile()) continue;
    const bytes = readFileSync(file);
    expect(bytes.includes(sample), entry).toBe(false);
    expect(bytes.includes(Buffer.from('ftyp')), entry).toBe(false);
  }
}

async function queued(videoId: string): Promise<number> {
  const entries = await redis.client().xrange(TRANSCODE_STREAM, '-', '+');
  return entries.filter(([, fields]) => fields[1]!.includes(videoId)).length;
}

const audited = (videoId: string) => readAuditEntries(auditDir).filter((e) => e.category === 'upload' && e.videoId === videoId).length;

/** The killed holder's upload lock would expire within its TTL; skip that wait. */
const expireDeadLock = (uploadId: string) => redis.client().del(`pulsevault:lock:upload:${uploadId}`);

async function crashAt(v: Volume, point: FinalizeStep, uploadId: string): Promise<void> {
  const doomed = await start('finalize', { ...v.env, FINALIZE_CRASH_AT: point }, 'test/helpers/crashing-finalize.mjs');
  await expect(finalize(doomed.url, body(uploadId))).rejects.toThrow();
  expect(await doomed.exited).toBeNull(); // killed by a signal, not an orderly exit
  expect(doomed.process.signalCode).toBe('SIGKILL');
  await expireDeadLock(uploadId);
}

describe('finalize killed at each step', () => {
  it.each(FINALIZE_STEPS.map((p) => [p]))('after %s: consistent on disk, finished by the restart, same videoId on retry', async (point) => {
    const v = await volume();
    const uploadId = await upload(v);
    await crashAt(v, point, uploadId);
    await assertConsistent(v, uploadId);

    const restarted = await start('finalize', v.env); // start-up recovery runs before it is ready
    expect(restarted.output()).toContain('recovered an interrupted finalize');
    const published = readdirSync(v.videoDir).filter(isVideoId);
    expect(published).toHaveLength(1);
    const videoId = published[0]!;
    const meta = await new MediaStore(v.videoDir).read(videoId);
    expect(meta).toMatchObject({ checksum: sha256(clip), size: clip.length, status: 'queued', uploadId, filename: 'scan.mp4' });
    expect(existsSync(path.join(v.uploadDir, uploadId))).toBe(false);
    expect(readdirSync(path.join(v.videoDir, '.staging'))).toEqual([]);

    const retry = await finalize(restarted.url, body(uploadId));
    expect(retry.status).toBe(200);
    expect(retry.json).toMatchObject({ videoId, checksum: sha256(clip) });
    // Audit is at-least-once: only a crash right after it repeats it. Enqueue is idempotent
    // (a video with a live job is not queued again), so even a crash right after it queues once.
    expect(audited(videoId)).toBe(point === 'after-audit' ? 2 : 1);
    expect(await queued(videoId)).toBe(1);
    await restarted.stop();
  });

  it('with a MEDIA_KEK, killed at every step: one restart finishes them all, no plaintext media in VIDEO_DIR throughout', async () => {
    const v = await volume(tmpdir(), randomBytes(32));
    const uploads: string[] = [];
    for (const point of FINALIZE_STEPS) {
      const uploadId = await upload(v);
      await crashAt(v, point, uploadId);
      await assertConsistent(v, uploadId);
      uploads.push(uploadId);
    }
    const restarted = await start('finalize', v.env);
    expect(restarted.output()).toContain('recovered an interrupted finalize');
    expect(readdirSync(v.videoDir).filter(isVideoId)).toHaveLength(FINALIZE_STEPS.length);
    expect(readdirSync(path.join(v.videoDir, '.staging'))).toEqual([]);
    expectNoPlaintextMedia(v.videoDir);
    const store = new MediaStore(v.videoDir, null, v.keys);
    for (const uploadId of uploads) {
      await assertConsistent(v, uploadId);
      expect(existsSync(path.join(v.uploadDir, uploadId))).toBe(false);
      const retry = await finalize(restarted.url, body(uploadId));
      expect(retry.status).toBe(200);
      expect(retry.json).toMatchObject({ checksum: sha256(clip), size: clip.length });
      const videoId = retry.json.videoId as string;
      expect(await store.read(videoId)).toMatchObject({ uploadId, filename: 'scan.mp4', metadata: { title: 't' }, encrypted: true, status: 'queued' });
      expect(readFileSync(path.join(v.videoDir, videoId, 'meta.json'), 'utf8')).not.toContain('scan.mp4');
      expect(await queued(videoId)).toBe(1);
    }
    await restarted.stop();
  });

  it('rolls back an intent whose upload was terminated before recovery', async () => {
    const v = await volume();
    const uploadId = await upload(v);
    await crashAt(v, 'after-intent', uploadId);
    expect((await fetch(`${v.tus.url}/uploads/${uploadId}`, { method: 'DELETE', headers: TUS })).status).toBe(204);

    const restarted = await start('finalize', v.env);
    expect(restarted.output()).toContain('rolled back an interrupted finalize');
    expect(existsSync(path.join(v.videoDir, '.finalize', `${uploadId}.json`))).toBe(false);
    expect(readdirSync(v.videoDir).filter(isVideoId)).toEqual([]);
    expect((await finalize(restarted.url, body(uploadId))).status).toBe(404);
    await restarted.stop();
  });
});

describe('UPLOAD_DIR on another filesystem than VIDEO_DIR (EXDEV)', () => {
  it('copies, fsyncs and renames instead, also across a crash right after the move', async () => {
    const v = await volume('/dev/shm');
    // Precondition: the two directories really are on different filesystems here.
    writeFileSync(path.join(v.uploadDir, 'probe'), 'x');
    expect(() => renameSync(path.join(v.uploadDir, 'probe'), path.join(path.dirname(v.videoDir), 'probe'))).toThrow(/EXDEV/);
    rmSync(path.join(v.uploadDir, 'probe'));
    const first = await upload(v);
    const second = await upload(v);
    const fin = await start('finalize', v.env);
    const res = await finalize(fin.url, body(first));
    expect(res.json).toMatchObject({ checksum: sha256(clip), size: clip.length });
    expect(readFileSync(path.join(v.videoDir, res.json.videoId as string, 'original.mp4')).equals(clip)).toBe(true);
    expect(existsSync(path.join(v.uploadDir, first))).toBe(false);
    expect(readdirSync(path.join(v.videoDir, res.json.videoId as string)).sort()).toEqual(['meta.json', 'original.mp4']); // no .part left
    await fin.stop();

    await crashAt(v, 'after-move', second);
    await assertConsistent(v, second);
    const restarted = await start('finalize', v.env);
    const retry = await finalize(restarted.url, body(second));
    expect(retry.json).toMatchObject({ checksum: sha256(clip) });
    expect(readdirSync(v.videoDir).filter(isVideoId)).toHaveLength(2);
    expect(readdirSync(v.uploadDir).filter((f) => f.startsWith(second))).toEqual([]);
    await restarted.stop();
  });
});
