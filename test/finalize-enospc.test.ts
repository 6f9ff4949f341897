/**
 * A full media volume during finalize (issue 17 item 8): 507 insufficient_storage
 * with a clear message, nothing lost, and the retry finishes once there is space.
 * VIDEO_DIR is a real, tiny tmpfs (this suite runs as root), so the copy of the
 * original really hits ENOSPC.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVideoId } from '../shared/video/store.js';
import { startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { createUpload, finalize, offsetOf, patch, sha256, TUS, uploadIdOf } from './helpers/uploads.js';
import { STACK_START_DEADLINE_MS } from './helpers/stack.js';

let redis: TestRedis;
let scratch: string;
let mediaRoot: string;
let auditWriter: { stop(): Promise<void> };
const processes: FunctionProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  scratch = mkdtempSync(path.join(tmpdir(), 'pv-enospc-'));
  mediaRoot = path.join(scratch, 'media');
  mkdirSync(mediaRoot);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mediaRoot]);
  auditWriter = await startAuditWriter(redis.url, path.join(scratch, 'audit'));
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')));
  await auditWriter?.stop();
  await redis?.close();
  execFileSync('umount', [mediaRoot]);
  rmSync(scratch, { recursive: true, force: true });
});

describe('finalize on a full media volume', () => {
  it('answers 507 insufficient_storage, keeps the upload, and finishes after space is freed', async () => {
    const uploadDir = path.join(scratch, 'uploads');
    const env = { REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot, UPLOAD_DIR: uploadDir };
    const tus = await startFunctionProcess('tus-upload', env);
    const fin = await startFunctionProcess('finalize', env);
    processes.push(tus, fin);
    const clip = readFileSync(await makeClip(path.join(scratch, 'clip.mp4'), { seconds: 2 }));
    expect(clip.length).toBeGreaterThan(64 * 1024); // far more than the volume holds
    const url = await createUpload(`${tus.url}/uploads`, clip.length);
    expect((await patch(url, 0, clip)).status).toBe(204);
    const body = { uploadId: uploadIdOf(url), filename: 'scan.mp4', userId: 'u-full' };

    const full = await finalize(fin.url, body);
    expect(full.status).toBe(507);
    expect(full.json).toMatchObject({ error: 'insufficient_storage', message: expect.stringMatching(/volume is full/) });
    expect(readFileSync(path.join(uploadDir, body.uploadId)).equals(clip)).toBe(true); // nothing lost
    const videos = path.join(mediaRoot, 'videos');
    expect(existsSync(videos) ? readdirSync(videos).filter(isVideoId) : []).toEqual([]);

    execFileSync('mount', ['-o', 'remount,size=16m', mediaRoot]);
    const retried = await finalize(fin.url, body);
    expect(retried.status).toBe(200);
    expect(retried.json.checksum).toBe(sha256(clip));
  });

  it('tus on a full upload volume: create and PATCH answer 507 JSON, the stored offset stays right, and the upload resumes once space returns', async () => {
    const uploadDir = path.join(scratch, 'tus-full');
    mkdirSync(uploadDir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', uploadDir]);
    try {
      const tus = await startFunctionProcess('tus-upload', { REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot, UPLOAD_DIR: uploadDir });
      processes.push(tus);
      const data = Buffer.alloc(256 * 1024, 7);
      for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i); // not all one byte: a misplaced resume would show
      const url = await createUpload(`${tus.url}/uploads`, data.length);
      const full = await patch(url, 0, data);
      expect(full.status).toBe(507);
      expect(full.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(await full.json()).toMatchObject({ error: 'insufficient_storage', message: expect.stringMatching(/volume is full/) });
      const stored = await offsetOf(url);
      expect(stored).toBeLessThan(data.length);
      expect(readFileSync(path.join(uploadDir, uploadIdOf(url))).equals(data.subarray(0, stored))).toBe(true);
      // Creating on the full volume: 507 too, not a 500.
      const created = await fetch(`${tus.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '10' } });
      expect(created.status).toBe(507);
      expect(await created.json()).toMatchObject({ error: 'insufficient_storage' });

      execFileSync('mount', ['-o', 'remount,size=16m', uploadDir]);
      expect((await patch(url, stored, data.subarray(stored))).status).toBe(204);
      expect(readFileSync(path.join(uploadDir, uploadIdOf(url))).equals(data)).toBe(true);
      expect(await createUpload(`${tus.url}/uploads`, 10)).toMatch(/\/uploads\//);
    } finally {
      execFileSync('umount', ['-l', uploadDir]);
    }
  });
});
