/** JWT auth on upload creation and finalize: the uploader owns the upload and the video. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaStore } from '../shared/video/store.js';
import { UPLOAD_OWNER_KEY } from '../shared/uploads/owner.js';
import { makeClip } from './helpers/media.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { createUpload, patch, TUS, uploadIdOf } from './helpers/uploads.js';

const JWT_SECRET = 'upload-auth-test-jwt-secret-0123456789abcd';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
const bearer = async (sub: string, roles: string[]) => ({ Authorization: `Bearer ${await jwt(sub, roles)}` });

let stack: TestStack;
let clip: Buffer;

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET } });
  clip = readFileSync(await makeClip(path.join(mkdtempSync(path.join(tmpdir(), 'pv-upauth-')), 'c.mp4'), { seconds: 1 }));
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

async function uploaded(headers: Record<string, string>): Promise<string> {
  const url = await createUpload(`${stack.url}/uploads`, clip.length, headers);
  expect((await patch(url, 0, clip)).status).toBe(204);
  return uploadIdOf(url);
}

async function finalize(body: Record<string, unknown>, headers: Record<string, string>) {
  const res = await fetch(`${stack.url}/uploads/finalize`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
}

describe('upload creation', () => {
  it('needs a JWT (401 with a challenge) and the uploader role (403)', async () => {
    const anonymous = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '10' } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const viewer = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '10', ...(await bearer('v-1', ['viewer'])) } });
    expect(viewer.status).toBe(403);
  });

  it('records the authenticated uploader, whatever owner the client claims in Upload-Metadata', async () => {
    const forged = `${UPLOAD_OWNER_KEY} ${Buffer.from('mallory').toString('base64')}`;
    const id = await uploaded({ ...(await bearer('alice', ['uploader'])), 'Upload-Metadata': forged });
    const info = JSON.parse(readFileSync(path.join(stack.mediaRoot, 'uploads', `${id}.json`), 'utf8')) as { metadata: Record<string, string> };
    expect(info.metadata[UPLOAD_OWNER_KEY]).toBe('alice');
  });
});

describe('finalize', () => {
  it('makes the token subject the owner of the video', async () => {
    const alice = await bearer('alice', ['uploader']);
    const uploadId = await uploaded(alice);
    const res = await finalize({ uploadId, filename: 'a.mp4' }, alice);
    expect(res.status).toBe(200);
    const meta = await new MediaStore(path.join(stack.mediaRoot, 'videos')).read(res.json.videoId as string);
    expect(meta.owner).toBe('alice');
  });

  it('refuses a body userId that is not the caller (403) and hides other uploaders’ uploads (404)', async () => {
    const alice = await bearer('alice', ['uploader']);
    const uploadId = await uploaded(alice);
    expect((await finalize({ uploadId, filename: 'a.mp4', userId: 'bob' }, alice)).status).toBe(403);
    expect((await finalize({ uploadId, filename: 'a.mp4' }, await bearer('bob', ['uploader']))).status).toBe(404);
    expect((await finalize({ uploadId, filename: 'a.mp4' }, {})).status).toBe(401);
    expect((await finalize({ uploadId, filename: 'a.mp4' }, await bearer('alice', ['viewer']))).status).toBe(403);
    // Nothing was consumed by the refusals: the owner still finalizes it.
    expect((await finalize({ uploadId, filename: 'a.mp4', userId: 'alice' }, alice)).status).toBe(200);
  });

  it('lets an admin finalize on a user’s behalf', async () => {
    const uploadId = await uploaded(await bearer('carol', ['uploader']));
    const res = await finalize({ uploadId, filename: 'c.mp4', userId: 'carol' }, await bearer('root', ['admin']));
    expect(res.status).toBe(200);
    expect((await new MediaStore(path.join(stack.mediaRoot, 'videos')).read(res.json.videoId as string)).owner).toBe('carol');
  });
});
