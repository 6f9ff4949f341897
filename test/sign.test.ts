/** POST /media/sign through the real local stack, with JWT auth configured. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../services/devstack/supervisor.js';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { readAuditEntries } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, TEST_HMAC_SECRET, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';

const JWT_SECRET = 'sign-test-jwt-secret-0123456789abcdef012345';
let stack: TestStack;
let video: { videoId: string };

const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('https://idp.test').setExpirationTime('2m').sign(new TextEncoder().encode(JWT_SECRET));

async function sign(body: unknown, bearer?: string) {
  const res = await fetch(`${stack.url}/media/sign`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET, AUTH_ISSUER: 'https://idp.test' } });
  video = await makeVideo(path.join(stack.mediaRoot, 'videos'), { owner: 'owner-1' });
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

describe('POST /media/sign', () => {
  it('signs for the owner: a relative URL that streams, expiring within TOKEN_EXPIRY_SECONDS', async () => {
    const before = Date.now();
    const res = await sign({ videoId: video.videoId, path: 'original.mp4', expiresIn: 60 }, await jwt('owner-1', ['uploader']));
    expect(res.status).toBe(200);
    expect(res.body.url).toMatch(new RegExp(`^/media/videos/${video.videoId}/original\\.mp4\\?token=v1\\.[A-Za-z0-9_.-]+$`));
    expect(res.body.expiresIn).toBe(60);
    const expiresAt = Date.parse(res.body.expiresAt as string);
    expect(expiresAt).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 59_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 61_000);
    expect((await fetch(`${stack.url}${res.body.url as string}`)).status).toBe(200);
  });

  it('defaults to and clamps at TOKEN_EXPIRY_SECONDS', async () => {
    const token = await jwt('owner-1', ['uploader']);
    expect((await sign({ videoId: video.videoId, path: 'original.mp4' }, token)).body.expiresIn).toBe(300);
    expect((await sign({ videoId: video.videoId, path: 'original.mp4', expiresIn: 86_400 }, token)).body.expiresIn).toBe(300);
  });

  it('lets admins sign any video and refuses other users with 403', async () => {
    expect((await sign({ videoId: video.videoId, path: 'hls/master.m3u8' }, await jwt('root', ['admin']))).status).toBe(200);
    const other = await sign({ videoId: video.videoId, path: 'hls/master.m3u8' }, await jwt('someone-else', ['uploader', 'viewer']));
    expect(other.status).toBe(403);
    expect(other.body.error).toBe('not_owner');
  });

  it('answers 401 with a challenge without a valid Bearer token', async () => {
    const none = await sign({ videoId: video.videoId, path: 'original.mp4' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="pulsevault"/);
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('owner-1').setIssuer('https://idp.test').setExpirationTime('2m').sign(new TextEncoder().encode(TEST_HMAC_SECRET));
    const bad = await sign({ videoId: video.videoId, path: 'original.mp4' }, forged);
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
  });

  it.each([
    [{ videoId: 'not-a-uuid', path: 'original.mp4' }, 400],
    [{ videoId: '0b6f1c7e-3a52-4d0e-9f3a-6f1f2c3d4e5f', path: 'original.mp4' }, 404],
    [{ path: 'original.mp4' }, 400],
    [{ videoId: 'VIDEO', path: '../meta.json' }, 400],
    [{ videoId: 'VIDEO', path: 'meta.json' }, 400],
    [{ videoId: 'VIDEO', path: '/etc/passwd' }, 400],
    [{ videoId: 'VIDEO', path: 'hls/../original.mp4' }, 400],
    [{ videoId: 'VIDEO', path: 'master.m3u8' }, 400],
    [{ videoId: 'VIDEO', path: 'hls/1080p.m3u8' }, 404],
    [{ videoId: 'VIDEO', path: 'original.mp4', expiresIn: 0 }, 400],
    [{ videoId: 'VIDEO', path: 'original.mp4', expiresIn: 1.5 }, 400],
    [{ videoId: 'VIDEO', path: 'original.mp4', expiresIn: '60' }, 400],
  ])('refuses %j with %i', async (body, status) => {
    const b = JSON.parse(JSON.stringify(body).replace('VIDEO', video.videoId)) as Record<string, unknown>;
    const res = await sign(b, await jwt('owner-1', ['uploader']));
    expect(res.status).toBe(status);
    expect(res.body).toMatchObject({ error: expect.any(String), requestId: expect.any(String) });
  });

  it('audits grants and denials with the actor, never the token or PHI', async () => {
    const entries = readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.action === 'sign');
    expect(entries.some((e) => e.outcome === 'granted' && (e.actor as { userId: string }).userId === subjectPseudonym(TEST_HMAC_SECRET, 'owner-1') && e.videoId === video.videoId)).toBe(true);
    expect(entries.some((e) => e.outcome === 'denied' && e.reason === 'not_owner' && (e.actor as { userId: string }).userId === subjectPseudonym(TEST_HMAC_SECRET, 'someone-else'))).toBe(true);
    expect(entries.some((e) => e.outcome === 'denied' && e.reason === 'unauthorized')).toBe(true);
    const text = JSON.stringify(entries);
    expect(text).not.toMatch(/v1\.[A-Za-z0-9_-]{8}\./);
    expect(text).not.toContain('PHI');
  });
});

describe('start-up', () => {
  it('refuses to start in production without auth configuration', async () => {
    const run = promisify(execFile);
    const err = await run(process.execPath, ['dist/templates/pulsevault-node20/runtime/main.js', 'dist/functions/sign/handler.js'], {
      env: { PATH: process.env.PATH, NODE_ENV: 'production', HMAC_SECRET: TEST_HMAC_SECRET, PORT: String(await freePort()), HOST: '127.0.0.1', REDIS_URL: stack.redis.url, SECRETS_DIR: '/nonexistent', MEDIA_ROOT: stack.mediaRoot },
      timeout: 20_000,
    }).then(() => null, (e: { code: number; stdout: string; stderr: string }) => e);
    expect(err).not.toBeNull();
    expect(err!.code).not.toBe(0);
    expect(`${err!.stdout}${err!.stderr}`).toMatch(/AUTH_JWKS_URL/);
  });
});
