/**
 * JWT subjects as identity providers issue them (issue 17 item 3): upload,
 * finalize and sign work for each, the audit log holds only their keyed
 * pseudonym, and a video is never visible before its upload audit entry is durable.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { isVideoId, MediaStore } from '../shared/video/store.js';
import { readAuditEntries, startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { startStack, TEST_HMAC_SECRET, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { createUpload, patch, uploadIdOf } from './helpers/uploads.js';

const JWT_SECRET = 'subjects-test-jwt-secret-0123456789abcdef01';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
const bearer = async (sub: string) => ({ Authorization: `Bearer ${await jwt(sub, ['uploader'])}` });

const SUBJECTS = ['CONTOSO\\jdoe', 'josé@example.org', 'user#1', "o'brien", 'alice smith', 'x'.repeat(200)];

let stack: TestStack;
let clip: Buffer;
const roots: string[] = [];

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET } });
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-subjects-'));
  roots.push(dir);
  clip = readFileSync(await makeClip(path.join(dir, 'c.mp4'), { seconds: 1 }));
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function upload(base: string, headers: Record<string, string>): Promise<string> {
  const url = await createUpload(`${base}/uploads`, clip.length, headers);
  expect((await patch(url, 0, clip)).status).toBe(204);
  return uploadIdOf(url);
}

async function post(url: string, body: unknown, headers: Record<string, string>) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('real-world JWT subjects', () => {
  it.each(SUBJECTS.map((s) => [s]))('%s uploads, finalizes and signs; audit entries carry only its pseudonym', async (sub) => {
    const auth = await bearer(sub);
    const uploadId = await upload(stack.url, auth);
    const done = await post(`${stack.url}/uploads/finalize`, { uploadId, filename: 'scan.mp4' }, auth);
    expect(done.status).toBe(200);
    const videoId = done.json.videoId as string;
    expect((await new MediaStore(path.join(stack.mediaRoot, 'videos')).read(videoId)).owner).toBe(sub);
    const signed = await post(`${stack.url}/media/sign`, { videoId, path: done.json.original }, auth);
    expect(signed.status).toBe(200);

    const pseudonym = subjectPseudonym(TEST_HMAC_SECRET, sub);
    const auditDir = path.join(stack.mediaRoot, 'audit');
    const ours = readAuditEntries(auditDir).filter((e) => e.videoId === videoId && e.category !== 'transcode');
    expect(ours.map((e) => `${e.category}/${e.action}/${e.outcome}`)).toEqual(expect.arrayContaining(['upload/finalize/success', 'access/sign/granted']));
    for (const e of ours) expect((e.actor as { userId: string }).userId).toBe(pseudonym);
    const files = readdirSync(auditDir).filter((f) => f.endsWith('.log')).map((f) => readFileSync(path.join(auditDir, f), 'utf8'));
    expect(files.join('\n')).not.toContain(JSON.stringify(sub).slice(1, -1));
  });
});

describe('the upload audit entry is part of the commit', () => {
  let redis: TestRedis;
  const processes: FunctionProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await redis?.close();
  });

  it('publishes nothing while the entry cannot be recorded (503); the retry publishes with the entry', async () => {
    redis = await startRedis();
    const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-subjects-commit-'));
    roots.push(mediaRoot);
    const env = { REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot, AUTH_JWT_SECRET: JWT_SECRET, AUDIT_ACK_TIMEOUT_MS: '300' };
    const tus = await startFunctionProcess('tus-upload', env);
    const fin = await startFunctionProcess('finalize', env);
    processes.push(tus, fin);
    const auth = await bearer('josé@example.org');
    const uploadId = await upload(tus.url, auth);
    const videoDir = path.join(mediaRoot, 'videos');

    // No audit writer yet: nothing can make the entry durable.
    const refused = await post(`${fin.url}/uploads/finalize`, { uploadId, filename: 'scan.mp4' }, auth);
    expect(refused.status).toBe(503);
    expect(refused.json.error).toBe('audit_unavailable');
    expect(existsSync(videoDir) ? readdirSync(videoDir).filter(isVideoId) : []).toEqual([]);

    const writer = await startAuditWriter(redis.url, path.join(mediaRoot, 'audit'));
    try {
      const retried = await post(`${fin.url}/uploads/finalize`, { uploadId, filename: 'scan.mp4' }, auth);
      expect(retried.status).toBe(200);
      const videoId = retried.json.videoId as string;
      expect(readdirSync(videoDir).filter(isVideoId)).toEqual([videoId]);
      const entries = readAuditEntries(path.join(mediaRoot, 'audit')).filter((e) => e.videoId === videoId && e.outcome === 'success');
      expect(entries.length).toBeGreaterThanOrEqual(1); // at-least-once: the refused attempt's entry may land once the writer runs
    } finally {
      await writer.stop();
    }
  });
});
