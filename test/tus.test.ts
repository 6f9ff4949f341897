/**
 * tus-upload through the real local stack (two tus-upload replicas behind the
 * round-robin gateway) with a real tus client.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, createServer, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeClip } from './helpers/media.js';
import { startStack, type TestStack } from './helpers/stack.js';
import { createUpload, finalize, offsetOf, patch, sha256, TUS, tusUpload, uploadIdOf } from './helpers/uploads.js';

const MAX_UPLOAD_BYTES = 8 * 1024 * 1024;
let stack: TestStack;
let clip: Buffer;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-tus-'));
  [stack, clip] = await Promise.all([
    startStack({ env: { LOCAL_REPLICAS: 'tus-upload=2', MAX_UPLOAD_BYTES: String(MAX_UPLOAD_BYTES), LOG_LEVEL: 'warn' } }),
    makeClip(path.join(dir, 'clip.mp4'), { seconds: 4, width: 640, height: 360 }).then((f) => readFileSync(f)),
  ]);
});

afterAll(async () => {
  await stack?.stop();
});

const uploadDir = () => path.join(stack.mediaRoot, 'uploads');
const uploadFiles = () => readdirSync(uploadDir()).sort();

/** A TCP proxy in front of the gateway that can cut every open connection (a network drop). */
async function cuttableProxy(target: string): Promise<{ url: string; bytesUp: () => number; cut: () => void; close: () => Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let up = 0;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.on('data', (d: Buffer) => (up += d.length));
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${addr.port}`,
    bytesUp: () => up,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('tus-upload through the gateway', () => {
  it('resumes from the server offset after the connection is cut, and finalize returns the sha256 of the bytes', async () => {
    const proxy = await cuttableProxy(stack.url);
    const log: { method: string; offset: number | null; status?: number }[] = [];
    let cuts = 0;
    try {
      const url = await tusUpload(`${proxy.url}/uploads`, clip, {
        chunkSize: 64 * 1024,
        onBeforeRequest: (req) => {
          // Cut once, in the middle of a PATCH body, when about half of the file has gone up.
          if (req.getMethod() === 'PATCH' && cuts === 0 && proxy.bytesUp() > clip.length / 2) {
            cuts++;
            setTimeout(proxy.cut, 5);
          }
        },
        onAfterResponse: (req, res) => {
          const offset = res.getHeader('Upload-Offset');
          log.push({ method: req.getMethod(), offset: offset ? Number(offset) : null, status: res.getStatus() });
        },
      });
      expect(cuts).toBe(1);
      // After the cut the client asked the server where it stood, and carried on from there.
      const head = log.find((e) => e.method === 'HEAD');
      expect(head?.status).toBe(200);
      expect(head!.offset!).toBeGreaterThan(0);
      expect(head!.offset!).toBeLessThan(clip.length);
      const afterHead = log.slice(log.indexOf(head!) + 1).filter((e) => e.method === 'PATCH');
      expect(afterHead.length).toBeGreaterThan(0);
      expect(afterHead.at(-1)!.offset).toBe(clip.length);

      const id = uploadIdOf(url);
      expect(readFileSync(path.join(uploadDir(), id)).equals(clip)).toBe(true);
      const res = await finalize(stack.url, { uploadId: id, filename: 'resumed.mp4', userId: 'user-1', metadata: { title: 'Resumed' } });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ status: 'uploaded', size: clip.length, checksum: sha256(clip), transcoding: 'queued' });
    } finally {
      await proxy.close();
    }
  });

  it('takes three uploads at once through two replicas (public route and /function/tus-upload) and finalizes each', async () => {
    const clips = [clip, Buffer.concat([clip, Buffer.from('tail-1')]), Buffer.concat([Buffer.from(clip), Buffer.from('tail-2')])];
    const endpoints = [`${stack.url}/uploads`, `${stack.url}/function/tus-upload/uploads`, `${stack.url}/uploads`];
    const urls = await Promise.all(clips.map((c, i) => tusUpload(endpoints[i]!, c, { chunkSize: 128 * 1024 })));
    expect(urls[1]).toMatch(/\/function\/tus-upload\/uploads\/[0-9a-f-]{36}$/);
    expect(urls[0]).toMatch(new RegExp(`^${stack.url}/uploads/[0-9a-f-]{36}$`));
    for (const [i, url] of urls.entries()) {
      expect(readFileSync(path.join(uploadDir(), uploadIdOf(url))).equals(clips[i]!)).toBe(true);
    }
    // Both replicas took PATCHes (the gateway alternates between them).
    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    for (const replica of ['tus-upload-0', 'tus-upload-1']) {
      expect(metrics).toMatch(new RegExp(`http_request_duration_seconds_count\\{[^}]*route="PATCH /uploads/:id"[^}]*replica="${replica}"[^}]*\\} [1-9]`));
    }
    const results = await Promise.all(urls.map((u, i) => finalize(stack.url, { uploadId: uploadIdOf(u), filename: `c${i}.mp4`, userId: 'user-2' })));
    results.forEach((r, i) => expect(r.json).toMatchObject({ size: clips[i]!.length, checksum: sha256(clips[i]!) }));
    expect(new Set(results.map((r) => r.json.videoId)).size).toBe(3);
  });

  it('answers a Location that resolves to the same upload on both routes (relative reference)', async () => {
    for (const endpoint of [`${stack.url}/uploads`, `${stack.url}/function/tus-upload/uploads`]) {
      const res = await fetch(endpoint, { method: 'POST', headers: { ...TUS, 'Upload-Length': '3' } });
      expect(res.status).toBe(201);
      expect(res.headers.get('location')).toMatch(/^uploads\/[0-9a-f-]{36}$/);
      const url = new URL(res.headers.get('location')!, endpoint).toString();
      expect(url.startsWith(`${endpoint}/`)).toBe(true);
      expect((await patch(url, 0, Buffer.from('abc'))).status).toBe(204);
      expect(await offsetOf(url)).toBe(3);
    }
  });

  it('supports creation-with-upload, creation-defer-length and termination', async () => {
    const withBody = await fetch(`${stack.url}/uploads`, {
      method: 'POST',
      headers: { ...TUS, 'Upload-Length': '10', 'Content-Type': 'application/offset+octet-stream' },
      body: Buffer.from('01234'),
    });
    expect(withBody.status).toBe(201);
    expect(withBody.headers.get('upload-offset')).toBe('5');

    const created = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Defer-Length': '1' } });
    expect(created.status).toBe(201);
    const deferred = new URL(created.headers.get('location')!, `${stack.url}/uploads`).toString();
    const head = await fetch(deferred, { method: 'HEAD', headers: TUS });
    expect(head.headers.get('upload-defer-length')).toBe('1');
    expect((await patch(deferred, 0, Buffer.from('xyz'), { 'Upload-Length': '3' })).status).toBe(204);
    expect(await offsetOf(deferred)).toBe(3);

    const id = uploadIdOf(deferred);
    expect((await fetch(deferred, { method: 'DELETE', headers: TUS })).status).toBe(204);
    expect((await fetch(deferred, { method: 'HEAD', headers: TUS })).status).toBe(404);
    expect(uploadFiles().filter((f) => f.startsWith(id))).toEqual([]);
  });

  it('never serves upload bytes back (GET), partial or complete', async () => {
    const url = await createUpload(`${stack.url}/uploads`, 6);
    await patch(url, 0, Buffer.from('abc'));
    const partial = await fetch(url);
    expect(partial.status).toBe(405);
    expect(await partial.text()).not.toContain('abc');
    await patch(url, 3, Buffer.from('def'));
    expect((await fetch(url)).status).toBe(405);
  });

  describe('refuses bad requests with the tus status codes, writing nothing', () => {
    it('413 on creation above MAX_UPLOAD_BYTES', async () => {
      const before = uploadFiles();
      const res = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': String(MAX_UPLOAD_BYTES + 1) } });
      expect(res.status).toBe(413);
      expect(uploadFiles()).toEqual(before);
    });

    it.each([
      ['missing Upload-Length', {}, 400],
      ['negative Upload-Length', { 'Upload-Length': '-5' }, 400],
      ['non-numeric Upload-Length', { 'Upload-Length': 'ten' }, 400],
      ['unsupported Tus-Resumable', { 'Upload-Length': '5', 'Tus-Resumable': '0.2.2' }, 412],
    ])('creation with %s → %i', async (_name, headers, status) => {
      const before = uploadFiles();
      const res = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, ...headers } });
      expect(res.status).toBe(status);
      if (status === 412) expect(res.headers.get('tus-version')).toBe('1.0.0');
      expect(uploadFiles()).toEqual(before);
    });

    it('412 without Tus-Resumable', async () => {
      const res = await fetch(`${stack.url}/uploads`, { method: 'POST', headers: { 'Upload-Length': '5' } });
      expect(res.status).toBe(412);
    });

    it('415 for a PATCH that is not application/offset+octet-stream; 409 for a wrong offset; 413 past the length', async () => {
      const url = await createUpload(`${stack.url}/uploads`, 5);
      const file = path.join(uploadDir(), uploadIdOf(url));
      expect((await patch(url, 0, Buffer.from('hello'), { 'Content-Type': 'text/plain' })).status).toBe(415);
      expect((await patch(url, 2, Buffer.from('hello'))).status).toBe(409);
      expect((await patch(url, 0, Buffer.from('hello, world'))).status).toBe(413);
      expect(statSync(file).size).toBe(0);
      expect(await offsetOf(url)).toBe(0);
    });

    it('404 for an unknown or malformed upload id', async () => {
      expect((await fetch(`${stack.url}/uploads/7c0e9f8e-1b2a-4c3d-8e4f-5a6b7c8d9e0f`, { method: 'HEAD', headers: TUS })).status).toBe(404);
      expect((await fetch(`${stack.url}/function/tus-upload/uploads/..%2Fetc`, { method: 'HEAD', headers: TUS })).status).toBe(404);
    });
  });
});
