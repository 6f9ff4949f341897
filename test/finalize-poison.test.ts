/**
 * Poison finalize bodies and journals (issue 17 item 2): a deeply nested or
 * oversized `metadata` is a 400 before anything moves, and a journal entry whose
 * step keeps failing ends `failed` — visible to an operator, who resumes it with
 * `pulsevault finalize retry` — instead of failing every minute for ever.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVideoId } from '../shared/video/store.js';
import { startAuditWriter } from './helpers/audit.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeClip } from './helpers/media.js';
import { baseTestEnv, spawnNode } from './helpers/node-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { createUpload, finalize, offsetOf, patch, uploadIdOf } from './helpers/uploads.js';
import { STACK_START_DEADLINE_MS } from './helpers/stack.js';

let redis: TestRedis;
let clip: Buffer;
let mediaRoot: string;
let tus: FunctionProcess;
let fin: FunctionProcess | null = null;
let auditWriter: { stop(): Promise<void> };
let env: Record<string, string>;

beforeAll(async () => {
  redis = await startRedis();
  mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-poison-'));
  env = { REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot };
  auditWriter = await startAuditWriter(redis.url, path.join(mediaRoot, 'audit'));
  clip = readFileSync(await makeClip(path.join(mediaRoot, 'clip.mp4'), { seconds: 1 }));
  tus = await startFunctionProcess('tus-upload', env);
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await fin?.stop('SIGKILL');
  await tus?.stop('SIGKILL');
  await auditWriter?.stop();
  await redis?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

async function upload(): Promise<{ url: string; uploadId: string }> {
  const url = await createUpload(`${tus.url}/uploads`, clip.length);
  expect((await patch(url, 0, clip)).status).toBe(204);
  return { url, uploadId: uploadIdOf(url) };
}

/** Metadata nested `levels` deep, as JSON text: JSON.stringify itself overflows the stack on the deepest. */
const nestedJson = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;
const nested = (levels: number) => JSON.parse(nestedJson(levels)) as Record<string, unknown>;

async function finalizeRaw(base: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}/uploads/finalize`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
const videoDir = () => path.join(mediaRoot, 'videos');
const published = () => (existsSync(videoDir()) ? readdirSync(videoDir()).filter(isVideoId) : []);
const journalFile = (uploadId: string) => path.join(videoDir(), '.finalize', `${uploadId}.json`);

function pulsevault(...args: string[]): Promise<{ code: number | null; output: string }> {
  const p = spawnNode(['dist/scripts/pulsevault.js', ...args], { ...baseTestEnv(), ...env, LOG_LEVEL: 'warn' });
  return p.exited.then((code) => ({ code, output: p.output() }));
}

describe('poison finalize bodies', () => {
  beforeAll(async () => {
    fin = await startFunctionProcess('finalize', env);
  });
  afterAll(async () => {
    await fin?.stop();
    fin = null;
  });

  it.each([
    ['nested 3,000 levels (6 KB)', nestedJson(3000), /nested at most 16 levels/],
    ['nested 7,900 levels', nestedJson(7900), /nested at most 16 levels/],
    ['with 1,001 keys', JSON.stringify(Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`k${i}`, i]))), /at most 1000 keys/],
    ['of 17 KiB', JSON.stringify({ note: 'x'.repeat(17 * 1024) }), /at most 16384 bytes/],
  ])('metadata %s → 400 naming the rule; nothing moved, the upload still finalizes', async (_what, metadata, rule) => {
    const { url, uploadId } = await upload();
    const res = await finalizeRaw(fin!.url, `{"uploadId":"${uploadId}","filename":"scan.mp4","userId":"u-poison","metadata":${metadata}}`);
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ error: 'invalid_field', message: expect.stringMatching(rule) });
    expect(existsSync(journalFile(uploadId))).toBe(false);
    expect(await offsetOf(url)).toBe(clip.length); // HEAD: still there, complete
    const ok = await finalize(fin!.url, { uploadId, filename: 'scan.mp4', userId: 'u-poison', metadata: { depth: { two: { three: 3 } } } });
    expect(ok.status).toBe(200);
  });
});

describe('a journal step that keeps failing', () => {
  it('ends `failed` after 3 attempts (500 finalize_failed, skipped by recovery); an operator resumes it', async () => {
    const { uploadId } = await upload();
    // What an older version journaled for a poison body: recursion in canonicalize fails the meta.json step every time.
    const now = new Date().toISOString();
    const probe = { extension: 'mp4', duration: 1, width: 320, height: 240, fps: 25, videoCodec: 'h264', audioCodec: null, bitrate: 1000, container: 'mov,mp4,m4a,3gp,3g2,mj2' };
    const entry = { uploadId, videoId: crypto.randomUUID(), state: 'intent', createdAt: now, updatedAt: now, owner: { userId: 'u-poison', role: null }, extension: 'mp4', requestId: 'req-poison', traceparent: null, pending: { filename: 'scan.mp4', metadata: nested(3000), probe } };
    const journalDir = path.dirname(journalFile(uploadId));
    if (!existsSync(journalDir)) throw new Error('the first describe block creates the journal directory');
    writeFileSync(journalFile(uploadId), `${JSON.stringify(entry)}\n`);

    fin = await startFunctionProcess('finalize', env); // start-up recovery: attempt 1
    const body = { uploadId, filename: 'scan.mp4', userId: 'u-poison' };
    expect((await finalize(fin.url, body)).status).toBe(500); // attempt 2: still the original error
    const parked = await finalize(fin.url, body); // attempt 3: parked
    expect(parked).toMatchObject({ status: 500, json: { error: 'finalize_failed' } });
    const journal = JSON.parse(readFileSync(journalFile(uploadId), 'utf8')) as Record<string, unknown>;
    expect(journal).toMatchObject({ state: 'failed', failedStep: 'intent', failures: 3, lastError: 'RangeError' });
    expect((await finalize(fin.url, body)).json.error).toBe('finalize_failed'); // no fourth attempt
    expect(JSON.parse(readFileSync(journalFile(uploadId), 'utf8')).failures).toBe(3);
    expect(published()).toEqual(expect.not.arrayContaining([entry.videoId]));

    const listed = await pulsevault('finalize', 'failed');
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.output.trim())).toMatchObject({ uploadId, videoId: entry.videoId, failedStep: 'intent', lastError: 'RangeError' });

    // The operator drops the metadata that cannot be stored, then resumes.
    writeFileSync(journalFile(uploadId), JSON.stringify({ ...journal, pending: { ...(journal.pending as object), metadata: {} } }));
    const retried = await pulsevault('finalize', 'retry', uploadId);
    expect(retried.code).toBe(0);
    const done = await finalize(fin.url, body);
    expect(done.status).toBe(200);
    expect(done.json.videoId).toBe(entry.videoId);
    expect(published()).toContain(entry.videoId);
  });
});
