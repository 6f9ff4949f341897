/**
 * Edit, hold and delete over HTTP through the real local stack (gateway, the videos function, the
 * media edge's nginx in front of stream, the audit writer, redis-server), against the contract in
 * docs/api.md "Edit, hold and delete".
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DELETED_MARK } from '../shared/lifecycle/tombstone.js';
import { readAuditEntries } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, type TestStack } from './helpers/stack.js';

const JWT_SECRET = 'lifecycle-test-jwt-secret-0123456789abcdef';
const ORIGIN = 'https://console.example.org';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));

let stack: TestStack;
let owner: Record<string, string>;
let admin: Record<string, string>;

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET, CORS_ORIGINS: ORIGIN } });
  owner = { Authorization: `Bearer ${await jwt('owner-1', ['uploader'])}` };
  admin = { Authorization: `Bearer ${await jwt('root', ['admin'])}` };
}, 120_000);
afterAll(async () => {
  await stack?.stop();
});

const videoDir = () => path.join(stack.mediaRoot, 'videos');
const json = { 'content-type': 'application/json' };

async function sign(videoId: string, file: string, as = owner): Promise<Response> {
  return fetch(`${stack.url}/media/sign`, { method: 'POST', headers: { ...json, ...as }, body: JSON.stringify({ videoId, path: file }) });
}
async function signedUrl(videoId: string, file: string): Promise<string> {
  const res = await sign(videoId, file);
  expect(res.status).toBe(200);
  return `${stack.url}${((await res.json()) as { url: string }).url}`;
}
async function metadata(videoId: string, token: string, as = owner) {
  return fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${token}`, { headers: { ...as, Origin: ORIGIN } });
}
const tokenOf = (url: string) => new URL(url).searchParams.get('token')!;
const patch = (videoId: string, body: unknown, headers: Record<string, string>) =>
  fetch(`${stack.url}/media/videos/${videoId}`, { method: 'PATCH', headers: { ...json, ...headers }, body: JSON.stringify(body) });

describe('edit', () => {
  it('metadata answers an ETag (exposed to the console), legalHold and retainUntil; a PATCH quoting it changes the title, audited by field name', async () => {
    const v = await makeVideo(videoDir());
    const token = tokenOf(await signedUrl(v.videoId, 'original.mp4'));
    const res = await metadata(v.videoId, token);
    expect(res.status).toBe(200);
    const etag = res.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(res.headers.get('access-control-expose-headers')).toMatch(/ETag/i);
    expect(await res.json()).toMatchObject({ legalHold: null, retainUntil: null, metadata: { title: 'PHI-title' } });

    expect((await patch(v.videoId, { title: 'x' }, owner)).status).toBe(428);
    expect((await patch(v.videoId, { title: 'x' }, { ...owner, 'If-Match': '"00000000000000000000000000000000"' })).status).toBe(412);
    const bad = await patch(v.videoId, { titel: 'x' }, { ...owner, 'If-Match': etag });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'unknown_field' });

    const edited = await patch(v.videoId, { title: 'PHI-new-title', description: 'PHI-new-description' }, { ...owner, 'If-Match': etag });
    expect(edited.status).toBe(200);
    const newEtag = edited.headers.get('etag');
    expect(newEtag).not.toBe(etag);
    expect(await edited.json()).toMatchObject({ videoId: v.videoId, metadata: { title: 'PHI-new-title', description: 'PHI-new-description' } });
    expect((await metadata(v.videoId, token)).headers.get('etag')).toBe(newEtag);
    // The old ETag is stale now.
    expect((await patch(v.videoId, { title: 'again' }, { ...owner, 'If-Match': etag })).status).toBe(412);

    const meta = JSON.parse(readFileSync(path.join(videoDir(), v.videoId, 'meta.json'), 'utf8'));
    expect(meta.metadata).toEqual({ title: 'PHI-new-title', description: 'PHI-new-description' });
    const updated = readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.action === 'video.updated' && e.videoId === v.videoId);
    expect(updated.map((e) => e.reason)).toEqual(['title.description']);
    expect(JSON.stringify(readAuditEntries(path.join(stack.mediaRoot, 'audit')))).not.toContain('PHI');
  });

  it('an owner cannot shorten the retention date; an admin can', async () => {
    const later = new Date(Date.now() + 10 * 86_400_000).toISOString();
    const v = await makeVideo(videoDir(), { retainUntil: later });
    const token = tokenOf(await signedUrl(v.videoId, 'original.mp4'));
    const etag = (await metadata(v.videoId, token)).headers.get('etag')!;
    const sooner = new Date(Date.now() + 86_400_000).toISOString();
    const refused = await patch(v.videoId, { retainUntil: sooner }, { ...owner, 'If-Match': etag });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: 'retention_shortened' });
    const byAdmin = await patch(v.videoId, { retainUntil: sooner }, { ...admin, 'If-Match': etag });
    expect(byAdmin.status).toBe(200);
    expect(await byAdmin.json()).toMatchObject({ retainUntil: sooner });
  });
});

describe('hold and delete', () => {
  it('a held video refuses DELETE with 409 legal_hold; released, it is disposed of', async () => {
    const v = await makeVideo(videoDir());
    const hold = (method: string, body: unknown, as = admin) => fetch(`${stack.url}/media/videos/${v.videoId}/hold`, { method, headers: { ...json, ...as }, body: JSON.stringify(body) });
    expect((await hold('PUT', { reason: 'litigation' }, owner)).status).toBe(403);
    expect((await hold('PUT', { reason: 'because' })).status).toBe(400);
    const held = await hold('PUT', { reason: 'litigation' });
    expect(held.status).toBe(200);
    expect(await held.json()).toMatchObject({ legalHold: { reason: 'litigation', since: expect.any(String) } });
    const refused = await fetch(`${stack.url}/media/videos/${v.videoId}?reason=duplicate`, { method: 'DELETE', headers: owner });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({ error: 'legal_hold' });
    expect(existsSync(path.join(v.dir, 'original.mp4'))).toBe(true);
    expect((await hold('DELETE', { reason: 'resolved' })).status).toBe(200);
    expect((await fetch(`${stack.url}/media/videos/${v.videoId}?reason=duplicate`, { method: 'DELETE', headers: owner })).status).toBe(200);
  });

  it('from the moment DELETE answers, every URL and token of the video is refused with JSON 410, cached edge grants included; nothing but the tombstone is left', async () => {
    const v = await makeVideo(videoDir());
    const original = await signedUrl(v.videoId, 'original.mp4');
    const master = await signedUrl(v.videoId, 'hls/master.m3u8');
    const segment = `${stack.url}/media/videos/${v.videoId}/hls/240p_000.m4s?token=${tokenOf(master)}`;
    // Played first: the edge has cached its grant of hls/ for this token.
    for (const url of [original, master, segment, segment]) {
      const res = await fetch(url);
      expect(res.status, url).toBe(200);
      await res.arrayBuffer();
    }
    expect((await fetch(`${stack.url}/media/videos/${v.videoId}?reason=because`, { method: 'DELETE', headers: owner })).status).toBe(400);
    expect((await fetch(`${stack.url}/media/videos/${v.videoId}?reason=duplicate`, { method: 'DELETE', headers: { ...json, ...(await jwt('uploader-2', ['uploader']).then((t) => ({ Authorization: `Bearer ${t}` }))) } })).status).toBe(403);
    expect(existsSync(path.join(v.dir, 'original.mp4'))).toBe(true);

    const res = await fetch(`${stack.url}/media/videos/${v.videoId}`, { method: 'DELETE', headers: { ...json, ...owner }, body: JSON.stringify({ reason: 'patient_request' }) });
    expect(res.status).toBe(200);
    const tombstone = await res.json();
    expect(tombstone).toMatchObject({ videoId: v.videoId, status: 'deleted', reason: 'patient_request', deletedBy: expect.stringMatching(/^sub-/), disposedAt: expect.any(String), original: { checksum: v.meta.checksum, size: v.meta.size } });

    const refusals = [
      await fetch(original),
      await fetch(master),
      await fetch(segment),
      await fetch(`${stack.url}/media/videos/${v.videoId}/hls/240p.m3u8?token=${tokenOf(master)}`),
      await metadata(v.videoId, tokenOf(original)),
      await fetch(`${stack.url}/media/videos/${v.videoId}/renditions?token=${tokenOf(original)}`),
      await sign(v.videoId, 'original.mp4'),
      await patch(v.videoId, { title: 'x' }, { ...owner, 'If-Match': '*' }),
    ];
    for (const r of refusals) {
      expect(r.status, r.url).toBe(410);
      expect(await r.json(), r.url).toMatchObject({ error: 'video_deleted' });
    }
    expect(readdirSync(v.dir).sort()).toEqual([DELETED_MARK, 'meta.json']);
    expect(readFileSync(path.join(v.dir, 'meta.json'), 'utf8')).not.toContain('PHI');

    // Idempotent: the same tombstone.
    const again = await fetch(`${stack.url}/media/videos/${v.videoId}?reason=duplicate`, { method: 'DELETE', headers: owner });
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual(tombstone);
  });
});
