/**
 * tus 1.0.0 details (issue 17 items 8 and 10), through the real stack's gateway
 * with JWT auth: HEAD echoes Upload-Metadata exactly as sent (the owner stays
 * server-side), X-HTTP-Method-Override (tus-js-client's overridePatchMethod),
 * Tus-Resumable on our own refusals, `POST /uploads/`, the checksum extension
 * (460 on a mismatch, nothing stored), and PATCH without Content-Type / Upload-Offset.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { SignJWT } from 'jose';
import * as tus from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPLOAD_OWNER_KEY } from '../shared/uploads/owner.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { createUpload, offsetOf, patch, TUS, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';

const JWT_SECRET = 'tus-conformance-jwt-secret-0123456789abcdef';
let stack: TestStack;
let auth: Record<string, string>;

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET } });
  const token = await new SignJWT({ roles: ['uploader'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('josé@example.org').setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
  auth = { Authorization: `Bearer ${token}` };
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

const head = (url: string) => fetch(url, { method: 'HEAD', headers: TUS });

describe('Upload-Metadata', () => {
  it('HEAD returns it exactly as sent; the owner is kept server-side only', async () => {
    const sent = 'filename c2Nhbi5tcDQ=,filetype dmlkZW8vbXA0,is_confidential';
    const url = await createUpload(`${stack.url}/uploads`, 10, { ...auth, 'Upload-Metadata': sent });
    expect((await head(url)).headers.get('upload-metadata')).toBe(sent);
    const info = JSON.parse(readFileSync(path.join(stack.mediaRoot, 'uploads', `${uploadIdOf(url)}.json`), 'utf8')) as { metadata: Record<string, string> };
    expect(info.metadata[UPLOAD_OWNER_KEY]).toBe('josé@example.org');
  });

  it('an upload created without metadata has none on HEAD', async () => {
    const url = await createUpload(`${stack.url}/uploads`, 10, auth);
    const res = await head(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('upload-metadata')).toBeNull();
  });
});

describe('X-HTTP-Method-Override', () => {
  it('tus-js-client with overridePatchMethod uploads through POST + override', async () => {
    const data = Buffer.alloc(300 * 1024, 7);
    const methods: string[] = [];
    const url = await new Promise<string>((resolve, reject) => {
      const upload = new tus.Upload(data, {
        endpoint: `${stack.url}/uploads`,
        headers: auth,
        chunkSize: 100 * 1024,
        overridePatchMethod: true,
        retryDelays: null,
        storeFingerprintForResuming: false,
        onBeforeRequest: (req) => void methods.push(req.getMethod()),
        onError: reject,
        onSuccess: () => resolve(upload.url!),
      });
      upload.start();
    });
    expect(methods.filter((m) => m !== 'POST')).toEqual([]); // every chunk really went as POST
    expect(await offsetOf(url)).toBe(data.length);
  });

  it('DELETE by override terminates the upload', async () => {
    const url = await createUpload(`${stack.url}/uploads`, 10, auth);
    const res = await fetch(url, { method: 'POST', headers: { ...TUS, 'X-HTTP-Method-Override': 'DELETE' } });
    expect(res.status).toBe(204);
    expect((await head(url)).status).toBe(404);
  });
});

describe('our own refusals are tus answers', () => {
  it('401 on creation and 405 on an upload carry Tus-Resumable', async () => {
    const unauthorized = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '10' } });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get('tus-resumable')).toBe('1.0.0');
    const url = await createUpload(`${stack.url}/uploads`, 10, auth);
    const notAllowed = await fetch(url, { method: 'GET', headers: TUS });
    expect(notAllowed.status).toBe(405);
    expect(notAllowed.headers.get('tus-resumable')).toBe('1.0.0');
  });
});

describe('POST /uploads/ (trailing slash)', () => {
  it('creates at the gateway, with a Location that resolves to /uploads/<id>', async () => {
    const url = await createUpload(`${stack.url}/uploads/`, 4, auth);
    expect(new URL(url).pathname).toMatch(/^\/uploads\/[0-9a-f-]{36}$/);
    expect((await patch(url, 0, Buffer.from('abcd'))).status).toBe(204);
    expect(await offsetOf(url)).toBe(4);
  });
});

describe('PATCH refusals store nothing', () => {
  it('Upload-Checksum: a mismatch → 460 and nothing stored; a match is kept; an unknown algorithm → 400', async () => {
    const options = await fetch(`${stack.url}/uploads`, { method: 'OPTIONS' });
    expect(options.headers.get('tus-extension')?.split(',')).toContain('checksum');
    expect(options.headers.get('tus-checksum-algorithm')?.split(',')).toEqual(expect.arrayContaining(['sha1', 'sha256']));
    expect(options.headers.get('access-control-allow-headers')).toMatch(/(^|, )Upload-Checksum(,|$)/);
    const url = await createUpload(`${stack.url}/uploads`, 8, auth);
    const digest = (algorithm: string, data: string) => createHash(algorithm).update(data).digest('base64');

    const wrong = await patch(url, 0, Buffer.from('abcd'), { 'Upload-Checksum': `sha1 ${digest('sha1', 'abce')}` });
    expect(wrong.status).toBe(460);
    expect(wrong.headers.get('tus-resumable')).toBe('1.0.0');
    expect(await offsetOf(url)).toBe(0);
    const unknown = await patch(url, 0, Buffer.from('abcd'), { 'Upload-Checksum': `crc32 ${digest('sha1', 'abcd')}` });
    expect(unknown.status).toBe(400);
    expect(await offsetOf(url)).toBe(0);

    expect((await patch(url, 0, Buffer.from('abcd'), { 'Upload-Checksum': `sha1 ${digest('sha1', 'abcd')}` })).status).toBe(204);
    expect((await patch(url, 4, Buffer.from('efgh'), { 'Upload-Checksum': `sha256 ${digest('sha256', 'efgh')}` })).status).toBe(204);
    expect(await offsetOf(url)).toBe(8);
    expect(readFileSync(path.join(stack.mediaRoot, 'uploads', uploadIdOf(url)), 'utf8')).toBe('abcdefgh');
  });

  it('Upload-Checksum on a chunk whose request breaks off: the bytes that arrived are dropped (they cannot be verified)', async () => {
    const url = await createUpload(`${stack.url}/uploads`, 8, auth);
    const dataFile = path.join(stack.mediaRoot, 'uploads', uploadIdOf(url));
    const req = request(url, {
      method: 'PATCH',
      headers: { ...TUS, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': '8', 'Upload-Checksum': `sha1 ${createHash('sha1').update('abcdefgh').digest('base64')}` },
    });
    req.on('error', () => undefined);
    req.write('abc');
    await waitFor(() => statSync(dataFile).size === 3, 10_000, 'the first bytes to reach the upload file');
    req.destroy(); // the client goes away mid-chunk
    await waitFor(() => statSync(dataFile).size === 0, 10_000, 'the unverifiable bytes to be dropped');
    expect(await offsetOf(url)).toBe(0);
  });

  it('no Content-Type → 415, no Upload-Offset → 400', async () => {
    const url = await createUpload(`${stack.url}/uploads`, 4, auth);
    const noType = await fetch(url, { method: 'PATCH', headers: { ...TUS, 'Upload-Offset': '0' }, body: new Uint8Array([1, 2, 3, 4]) });
    expect(noType.status).toBe(415);
    const noOffset = await fetch(url, { method: 'PATCH', headers: { ...TUS, 'Content-Type': 'application/offset+octet-stream' }, body: new Uint8Array([1, 2, 3, 4]) });
    expect(noOffset.status).toBe(400);
    expect(((await noOffset.json()) as { error: string }).error).toBe('missing_upload_offset');
    expect(await offsetOf(url)).toBe(0);
  });
});
