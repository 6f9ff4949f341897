/**
 * The role model (docs/api.md "Roles"; shared/auth/jwt.ts), every role against
 * every endpoint that looks at roles, through the real stack. The callers are
 * the video's owner holding each role in turn — owning a video grants nothing
 * without the uploader role — plus another uploader and an anonymous caller.
 * PATCH/HEAD/DELETE on an upload and stream are authorised by their URL
 * (upload URL, signed token), never by role.
 */
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { createUpload, patch, TUS, uploadIdOf } from './helpers/uploads.js';

const JWT_SECRET = 'roles-test-jwt-secret-0123456789abcdef0123';
const OWNER = 'owner-1';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));

interface Caller {
  name: string;
  sub: string | null;
  roles: string[];
}

/**
 * Expected answers per endpoint; `private` = the metadata view includes filename and user metadata;
 * `listed` = the owner's video is in the caller's listing (read from the media volume: no mirror here);
 * edit/remove = PATCH/DELETE /media/videos/:id (owner or admin), hold = PUT/DELETE …/hold (admins),
 * report = GET /admin/audit/report (admins); webhooks = GET/POST /admin/webhooks and DELETE …/<id>
 * (admins: 200/201/204; others the refusal given).
 */
type Expected = { create: number; finalize: number; sign: number; private: boolean; list: number; listed: boolean; edit: number; remove: number; hold: number; report: number; webhooks: number };
const TABLE: [Caller, Expected][] = [
  [{ name: 'anonymous', sub: null, roles: [] }, { create: 401, finalize: 401, sign: 401, private: false, list: 401, listed: false, edit: 401, remove: 401, hold: 401, report: 401, webhooks: 401 }],
  [{ name: 'owner, no role', sub: OWNER, roles: [] }, { create: 403, finalize: 403, sign: 403, private: false, list: 403, listed: false, edit: 403, remove: 403, hold: 403, report: 403, webhooks: 403 }],
  [{ name: 'owner as viewer', sub: OWNER, roles: ['viewer'] }, { create: 403, finalize: 403, sign: 403, private: false, list: 403, listed: false, edit: 403, remove: 403, hold: 403, report: 403, webhooks: 403 }],
  [{ name: 'owner as uploader', sub: OWNER, roles: ['uploader'] }, { create: 201, finalize: 200, sign: 200, private: true, list: 200, listed: true, edit: 200, remove: 200, hold: 403, report: 403, webhooks: 403 }],
  [{ name: 'another uploader', sub: 'uploader-2', roles: ['uploader', 'viewer'] }, { create: 201, finalize: 404, sign: 403, private: false, list: 200, listed: false, edit: 403, remove: 403, hold: 403, report: 403, webhooks: 403 }],
  [{ name: 'admin', sub: 'root', roles: ['admin'] }, { create: 201, finalize: 200, sign: 200, private: true, list: 200, listed: true, edit: 200, remove: 200, hold: 200, report: 200, webhooks: 200 }],
];
const ADMIN: Caller = { name: 'admin', sub: 'root', roles: ['admin'] };

let stack: TestStack;
let video: { videoId: string };
let clip: Buffer;
let mediaToken: string;

async function auth(caller: Caller): Promise<Record<string, string>> {
  return caller.sub === null ? {} : { Authorization: `Bearer ${await jwt(caller.sub, caller.roles)}` };
}

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET, WEBHOOK_ALLOWED_HOSTS: '127.0.0.1/32' } });
  video = await makeVideo(path.join(stack.mediaRoot, 'videos'), { owner: OWNER });
  clip = readFileSync(path.join(stack.mediaRoot, 'videos', video.videoId, 'original.mp4'));
  const signed = await fetch(`${stack.url}/media/sign`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(await auth({ name: 'admin', sub: 'root', roles: ['admin'] })) },
    body: JSON.stringify({ videoId: video.videoId, path: 'original.mp4' }),
  });
  mediaToken = new URL(((await signed.json()) as { url: string }).url, stack.url).searchParams.get('token')!;
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

describe.each(TABLE)('$name', (caller, expected) => {
  it(`POST /uploads → ${expected.create}`, async () => {
    const res = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '10', ...(await auth(caller)) } });
    expect(res.status).toBe(expected.create);
  });

  it(`POST /uploads/finalize of the owner's upload → ${expected.finalize}`, async () => {
    const url = await createUpload(`${stack.url}/uploads`, clip.length, await auth({ name: 'owner', sub: OWNER, roles: ['uploader'] }));
    expect((await patch(url, 0, clip)).status).toBe(204);
    const res = await fetch(`${stack.url}/uploads/finalize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await auth(caller)) },
      body: JSON.stringify({ uploadId: uploadIdOf(url), filename: 'scan.mp4', ...(caller.roles.includes('admin') ? { userId: OWNER } : {}) }),
    });
    expect(res.status).toBe(expected.finalize);
  });

  it(`POST /media/sign for the owner's video → ${expected.sign}`, async () => {
    const res = await fetch(`${stack.url}/media/sign`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await auth(caller)) },
      body: JSON.stringify({ videoId: video.videoId, path: 'original.mp4' }),
    });
    expect(res.status).toBe(expected.sign);
  });

  it(`GET …/metadata with a signed token: private fields ${expected.private ? 'shown' : 'hidden'}`, async () => {
    const res = await fetch(`${stack.url}/media/videos/${video.videoId}/metadata?token=${mediaToken}`, { headers: await auth(caller) });
    expect(res.status).toBe(200);
    expect('filename' in ((await res.json()) as object)).toBe(expected.private);
  });

  it(`GET /media/videos → ${expected.list}, the owner's video ${expected.listed ? 'listed' : 'not listed'}`, async () => {
    const res = await fetch(`${stack.url}/media/videos`, { headers: await auth(caller) });
    expect(res.status).toBe(expected.list);
    const body = (await res.json()) as { videos?: { videoId: string; owner: string }[] };
    expect((body.videos ?? []).some((v) => v.videoId === video.videoId)).toBe(expected.listed);
    // Anyone but an admin sees only their own.
    if (body.videos && !caller.roles.includes('admin')) expect(body.videos.every((v) => v.owner === caller.sub)).toBe(true);
  });

  it(`PATCH /media/videos/:id of the owner's video → ${expected.edit}`, async () => {
    const signed = await fetch(`${stack.url}/media/videos/${video.videoId}/metadata?token=${mediaToken}`, { headers: await auth(ADMIN) });
    const res = await fetch(`${stack.url}/media/videos/${video.videoId}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json', 'If-Match': signed.headers.get('etag')!, ...(await auth(caller)) },
      body: JSON.stringify({ description: `edited by ${caller.name}` }),
    });
    expect(res.status).toBe(expected.edit);
  });

  it(`GET, POST /admin/webhooks, DELETE /admin/webhooks/<id> → ${expected.webhooks}`, async () => {
    const admin = await auth(ADMIN);
    const made = await fetch(`${stack.url}/admin/webhooks`, { method: 'POST', headers: { 'content-type': 'application/json', ...admin }, body: JSON.stringify({ url: 'http://127.0.0.1:9/hooks', events: ['video.ready'] }) });
    expect(made.status).toBe(201);
    const { id, secret } = (await made.json()) as { id: string; secret: string };
    expect(secret).toMatch(/^whsec_/);
    const headers = await auth(caller);
    const list = await fetch(`${stack.url}/admin/webhooks`, { headers });
    const post = await fetch(`${stack.url}/admin/webhooks`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ url: 'http://127.0.0.1:9/other', events: ['video.failed'] }) });
    const del = await fetch(`${stack.url}/admin/webhooks/${id}`, { method: 'DELETE', headers });
    const allowed = expected.webhooks === 200;
    expect([list.status, post.status, del.status]).toEqual(allowed ? [200, 201, 204] : [expected.webhooks, expected.webhooks, expected.webhooks]);
    if (allowed) {
      const listed = (await list.json()) as { endpoints: { id: string }[] };
      expect(listed.endpoints.map((e) => e.id)).toContain(id);
      expect(JSON.stringify(listed)).not.toContain('whsec_');
      await fetch(`${stack.url}/admin/webhooks/${((await post.json()) as { id: string }).id}`, { method: 'DELETE', headers: admin });
    } else {
      await fetch(`${stack.url}/admin/webhooks/${id}`, { method: 'DELETE', headers: admin });
    }
  });

  it(`GET /admin/audit/report?videoId= → ${expected.report}`, async () => {
    const res = await fetch(`${stack.url}/admin/audit/report?videoId=${video.videoId}`, { headers: await auth(caller) });
    expect(res.status).toBe(expected.report);
  });

  it(`PUT and DELETE /media/videos/:id/hold → ${expected.hold}`, async () => {
    for (const [method, reason] of [['PUT', 'litigation'], ['DELETE', 'resolved']] as const) {
      const res = await fetch(`${stack.url}/media/videos/${video.videoId}/hold`, { method, headers: { 'content-type': 'application/json', ...(await auth(caller)) }, body: JSON.stringify({ reason }) });
      expect(res.status, method).toBe(expected.hold);
    }
  });

  it(`DELETE /media/videos/:id of another video of the owner's → ${expected.remove}`, async () => {
    const doomed = await makeVideo(path.join(stack.mediaRoot, 'videos'), { owner: OWNER });
    const res = await fetch(`${stack.url}/media/videos/${doomed.videoId}?reason=duplicate`, { method: 'DELETE', headers: await auth(caller) });
    expect(res.status).toBe(expected.remove);
  });

  it('GET a signed media URL → 200 (the token authorises, not the role)', async () => {
    const res = await fetch(`${stack.url}/media/videos/${video.videoId}/original.mp4?token=${mediaToken}`, { headers: await auth(caller) });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  });
});
