/**
 * The media edge's decryption module (services/media-edge/decrypt-module/) on real nginx, with the
 * edge's generated configuration (mediaEdgeConfig). In front of it, in this process, the stream
 * function's own code for an encrypted file: EncryptedFile, planResponse and sendEncryptedFile with
 * its handover (the grant sealed under the edge's key). Token, audit and path checks are the
 * function's and are tested with the whole stack (test/encryption.test.ts); here the module's own
 * promises: the planned bytes exactly, no byte that failed its tag, no grant that does not open, no
 * key or grant in an answer or a log line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localDecryptModule } from '../services/media-edge/build-module.js';
import { edgeKeyInclude, mediaEdgeConfig } from '../services/media-edge/nginx-config.js';
import { freePort } from '../services/devstack/supervisor.js';
import { which } from '../services/devstack/which.js';
import { CHUNK_BYTES, EncryptedFile, encryptFile } from '../shared/crypto/chunked.js';
import { ORIGINAL_ENCRYPTED_MARK, sendEncryptedFile } from '../shared/crypto/original-response.js';
import { EDGE_DECRYPT_GRANT_HEADER, edgeDecryptRedirect, sealEdgeGrant } from '../shared/delivery/edge-decrypt.js';
import { validatorsOf } from '../shared/delivery/media-response.js';
import { rawRequest } from './helpers/raw-http.js';
import { waitFor } from './helpers/wait.js';

const EDGE_KEY = randomBytes(32).toString('hex');
const KEY = randomBytes(32);
const VIDEO = randomUUID();
/** Over the module's 1 MiB window several times, not a whole number of chunks. */
const SIZE = 5 * 1024 * 1024 + 12_345;

let dir: string;
let videoDir: string;
let plain: Buffer;
let nginx: ChildProcess;
let nginxLog = '';
let edge: string;
let upstream: Server;
/** How the stand-in for the stream function answers; by default as the function does. */
let answer: (req: IncomingMessage, res: ServerResponse, file: string) => Promise<void>;

const asTheFunction = async (req: IncomingMessage, res: ServerResponse, file: string) => {
  const handle = await open(path.join(videoDir, VIDEO, file), 'r');
  const info = await handle.stat({ bigint: true });
  const encrypted = await EncryptedFile.open(handle, KEY, VIDEO);
  await sendEncryptedFile(req, res, encrypted, validatorsOf(info), { 'Content-Type': 'video/mp4', 'Cache-Control': 'private' }, {}, { edgeKey: EDGE_KEY, videoId: VIDEO, relativePath: file });
};

const url = (file: string) => `/media/videos/${VIDEO}/${file}?token=not-checked-here`;
const get = (file: string, headers: Record<string, string> = {}) => rawRequest(edge, url(file), headers);

/** A GET whose connection may be cut mid-body: what arrived, and whether it ended whole. */
function getCut(file: string, headers: Record<string, string>): Promise<{ status: number; length: number; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(`${edge}${url(file)}`, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (complete: boolean) => resolve({ status: res.statusCode!, length: Number(res.headers['content-length']), body: Buffer.concat(chunks), complete });
      res.on('end', () => done(true));
      res.on('aborted', () => done(false));
      res.on('error', () => done(false));
    });
    req.on('error', reject);
    req.end();
  });
}

async function sealed(name: string, bytes: Buffer): Promise<void> {
  const source = path.join(dir, `${name}.plain`);
  writeFileSync(source, bytes);
  await encryptFile(source, path.join(videoDir, VIDEO, name), KEY, VIDEO);
}

function flipByte(file: string, at: number): () => void {
  const fd = openSync(path.join(videoDir, VIDEO, file), 'r+');
  const one = Buffer.alloc(1);
  readSync(fd, one, 0, 1, at);
  writeSync(fd, Buffer.from([one[0]! ^ 0x20]), 0, 1, at);
  return () => {
    writeSync(fd, one, 0, 1, at);
    closeSync(fd);
  };
}

beforeAll(async () => {
  const bin = which('nginx');
  expect(bin, 'nginx (apt-get install nginx)').not.toBeNull();
  const module = await localDecryptModule(bin!);
  if ('missing' in module) throw new Error(`the decryption module does not build (apt-get install nginx-dev): ${module.missing}`);

  dir = mkdtempSync(path.join(tmpdir(), 'pv-edge-decrypt-'));
  videoDir = path.join(dir, 'videos');
  mkdirSync(path.join(videoDir, VIDEO), { recursive: true });
  plain = randomBytes(SIZE);
  await sealed('original.mp4', plain);
  // finalize's mark: nginx asks for no grant of this original.
  writeFileSync(path.join(videoDir, VIDEO, ORIGINAL_ENCRYPTED_MARK), '');
  await sealed('original.mov', Buffer.alloc(0));

  answer = asTheFunction;
  upstream = createServer((req, res) => {
    // The function refuses the edge a grant of an encrypted file: nginx would send its ciphertext.
    if (req.headers['x-media-edge'] === 'grant') return void res.writeHead(403, { 'Content-Length': '0' }).end();
    const file = /^\/media\/videos\/[^/]+\/([^?]+)/.exec(req.url ?? '')![1]!;
    answer(req, res, file).catch((err: Error) => {
      res.writeHead(500, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'test_upstream', message: err.message }));
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));

  const port = await freePort();
  const me = userInfo();
  const edgeKeyFile = path.join(dir, 'edge-key.conf');
  writeFileSync(edgeKeyFile, edgeKeyInclude(EDGE_KEY), { mode: 0o600 });
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    mediaEdgeConfig({
      listen: `127.0.0.1:${port}`,
      videoDir,
      stream: [`127.0.0.1:${(upstream.address() as AddressInfo).port}`],
      otherwise: null,
      tempDir: dir,
      user: me.uid === 0 ? me.username : null,
      accessLog: path.join(dir, 'access.log'),
      edgeKeyFile,
      decryptModule: module.path,
    }),
  );
  nginx = spawn(bin!, ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  nginx.stderr!.on('data', (c: Buffer) => (nginxLog += c.toString()));
  edge = `http://127.0.0.1:${port}`;
  await waitFor(() => fetch(`${edge}/`).then(() => true, () => false), 10_000, 'nginx to listen');
});

afterAll(async () => {
  nginx?.kill('SIGTERM');
  upstream?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the edge's decryption module", () => {
  it('sends exactly the planned bytes: random ranges across windows and chunks, the whole file, an empty one, with the validators the function planned', async () => {
    const whole = await get('original.mp4');
    expect(whole.status).toBe(200);
    expect(whole.body.equals(plain)).toBe(true);
    // The function's headers (kept across the redirect or re-added) and the module's own.
    const info = await stat(path.join(videoDir, VIDEO, 'original.mp4'), { bigint: true });
    expect(whole.headers).toMatchObject({
      'content-type': 'video/mp4',
      'cache-control': 'private',
      'content-length': String(SIZE),
      'accept-ranges': 'bytes',
      etag: validatorsOf(info).etag,
      'last-modified': validatorsOf(info).lastModified,
    });
    expect(whole.headers['x-pulsevault-function']).toBeUndefined(); // nginx sent it
    expect(Object.keys(whole.headers).some((h) => h.startsWith('x-media-edge'))).toBe(false);

    const window = 1024 * 1024;
    const edges = [0, CHUNK_BYTES - 1, CHUNK_BYTES, window - 1, window, window + 1, SIZE - CHUNK_BYTES, SIZE - 1];
    const ranges: [number, number][] = [[0, 0], [SIZE - 1, SIZE - 1], [0, SIZE - 1], ...edges.slice(0, -1).map((s, i) => [s, edges[i + 1]!] as [number, number])];
    for (let i = 0; i < 24; i++) {
      const s = Math.floor(Math.random() * SIZE);
      ranges.push([s, Math.min(SIZE - 1, s + Math.floor(Math.random() * 3 * window))]);
    }
    for (const [s, e] of ranges) {
      const r = await get('original.mp4', { Range: `bytes=${s}-${e}` });
      expect([r.status, r.headers['content-range'], r.headers['content-length']], `${s}-${e}`).toEqual([206, `bytes ${s}-${e}/${SIZE}`, String(e - s + 1)]);
      expect(r.body.equals(plain.subarray(s, e + 1)), `${s}-${e}`).toBe(true);
    }
    // Suffix and open ranges, as the function plans them.
    expect((await get('original.mp4', { Range: 'bytes=-100' })).body.equals(plain.subarray(SIZE - 100))).toBe(true);
    expect((await get('original.mp4', { Range: `bytes=${SIZE - 5}-` })).body.equals(plain.subarray(SIZE - 5))).toBe(true);

    const empty = await get('original.mov');
    expect([empty.status, empty.headers['content-length'], empty.body.length]).toEqual([200, '0', 0]);
  });

  it('concurrent ranges on several connections each get their own bytes (the workers reuse their window buffers)', async () => {
    const ranges = Array.from({ length: 24 }, () => {
      const s = Math.floor(Math.random() * (SIZE - 1));
      return [s, Math.min(SIZE - 1, s + 1024 * 1024 + Math.floor(Math.random() * 1024 * 1024))] as const;
    });
    const replies = await Promise.all(ranges.map(([s, e]) => get('original.mp4', { Range: `bytes=${s}-${e}` })));
    replies.forEach((r, i) => expect(r.body.equals(plain.subarray(ranges[i]![0], ranges[i]![1] + 1)), `${ranges[i]}`).toBe(true));
  });

  it('a reader that stops for a while, then reads on, gets every byte (the module waits for the socket, it does not buffer the file)', async () => {
    const body = await new Promise<Buffer>((resolve, reject) => {
      const req = request(`${edge}${url('original.mp4')}`, (res) => {
        const chunks: Buffer[] = [];
        let paused = false;
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          if (!paused) {
            paused = true;
            res.pause();
            setTimeout(() => res.resume(), 1_500);
          }
        });
        res.on('end', () => resolve(Buffer.concat(chunks)));
      });
      req.on('error', reject);
      req.end();
    });
    expect(body.equals(plain)).toBe(true);
  });

  it('a flipped byte is never sent: in the first window a JSON 500 before any byte; further on, the connection is cut before the tampered chunk, every byte sent authentic; a log line without the request', async () => {
    const chunkOffset = (i: number) => 32 + i * (CHUNK_BYTES + 16);
    let restore = flipByte('original.mp4', chunkOffset(3) + 10);
    try {
      const bad = await get('original.mp4', { Range: `bytes=${CHUNK_BYTES}-${5 * CHUNK_BYTES}` });
      expect(bad.status).toBe(500);
      expect(bad.headers['content-type']).toMatch(/^application\/json/);
      expect(bad.headers['cache-control']).toBe('no-store');
      expect(JSON.parse(bad.body.toString())).toMatchObject({ error: 'media_integrity' });
      // Chunks the range does not touch still serve.
      expect((await get('original.mp4', { Range: 'bytes=0-99' })).body.equals(plain.subarray(0, 100))).toBe(true);
    } finally {
      restore();
    }
    const tampered = 40; // chunk 40 lies in the third 1 MiB window
    restore = flipByte('original.mp4', chunkOffset(tampered) + 10);
    try {
      const cut = await getCut('original.mp4', { Range: `bytes=0-${SIZE - 1}` });
      expect(cut.status).toBe(206);
      expect(cut.complete).toBe(false);
      expect(cut.body.length).toBeLessThanOrEqual(tampered * CHUNK_BYTES);
      expect(cut.body.equals(plain.subarray(0, cut.body.length))).toBe(true);
    } finally {
      restore();
    }
    await waitFor(() => nginxLog.includes(`chunk ${tampered} of`), 5_000, "the module's log line");
    const lines = nginxLog.split('\n').filter((l) => l.includes('pulsevault_decrypt'));
    expect(lines.some((l) => l.includes(`chunk 3 of "${path.join(videoDir, VIDEO, 'original.mp4')}" failed its authentication tag`))).toBe(true);
    for (const line of lines) expect(line).not.toMatch(/token|127\.0\.0\.1|client:|request:/);
  });

  it('a grant that does not open is refused with a JSON 502, nothing sent: another edge key, a grant for another file, a truncated one, none', async () => {
    const grantFor = (edgeKey: string, file: string) => sealEdgeGrant(edgeKey, edgeDecryptRedirect(VIDEO, file), { status: 200, start: 0, length: SIZE, videoId: VIDEO, key: KEY });
    const redirecting = (grant: string | null) => async (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'Content-Type': 'video/mp4', 'X-Accel-Redirect': edgeDecryptRedirect(VIDEO, 'original.mp4'), ...(grant === null ? {} : { [EDGE_DECRYPT_GRANT_HEADER]: grant }), 'Content-Length': '0' });
      res.end();
    };
    const cases: [string, string | null][] = [
      ['another edge key', grantFor(randomBytes(32).toString('hex'), 'original.mp4')],
      ['a grant for another file', grantFor(EDGE_KEY, 'original.mov')],
      ['a truncated grant', grantFor(EDGE_KEY, 'original.mp4').slice(0, -4)],
      ['no grant', null],
    ];
    try {
      for (const [what, grant] of cases) {
        answer = redirecting(grant);
        const r = await get('original.mp4');
        expect(r.status, what).toBe(502);
        expect(r.headers['content-type'], what).toMatch(/^application\/json/);
        expect(JSON.parse(r.body.toString()), what).toMatchObject({ error: 'bad_gateway' });
        expect(r.body.includes(plain.subarray(0, 16)), what).toBe(false);
      }
      // A grant for more than the file holds does not open onto other bytes either.
      answer = redirecting(sealEdgeGrant(EDGE_KEY, edgeDecryptRedirect(VIDEO, 'original.mp4'), { status: 206, start: SIZE - 10, length: 20, videoId: VIDEO, key: KEY }));
      expect((await get('original.mp4')).status).toBe(502);
    } finally {
      answer = asTheFunction;
    }
    expect(nginxLog).not.toContain(KEY.toString('hex'));
    expect(nginxLog).not.toContain(KEY.toString('base64'));
  });

  it('the grant never reaches a client, even on an answer without a redirect', async () => {
    const grant = sealEdgeGrant(EDGE_KEY, edgeDecryptRedirect(VIDEO, 'original.mp4'), { status: 200, start: 0, length: SIZE, videoId: VIDEO, key: KEY });
    answer = async (_req, res) => {
      res.writeHead(403, { 'Content-Type': 'application/json', [EDGE_DECRYPT_GRANT_HEADER]: grant });
      res.end('{"error":"forbidden"}');
    };
    try {
      const r = await get('original.mp4');
      expect(r.status).toBe(403);
      expect(r.headers[EDGE_DECRYPT_GRANT_HEADER.toLowerCase()]).toBeUndefined();
      expect(JSON.stringify(r.headers)).not.toContain(grant.slice(0, 24));
    } finally {
      answer = asTheFunction;
    }
  });

  it('a file gone since the function planned (a delete) is a JSON 404; one swapped for a symlink is never read (JSON 503, logged)', async () => {
    await sealed('gone.mp4', randomBytes(1000));
    await sealed('elsewhere.mp4', randomBytes(1000));
    /** As the function, with `change` done to the file after it planned and before nginx reads the answer. */
    const thenChange = (change: (file: string) => void) => async (req: IncomingMessage, res: ServerResponse, file: string) => {
      const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
      res.writeHead = ((...args: unknown[]) => {
        change(path.join(videoDir, VIDEO, file));
        return writeHead(...args);
      }) as typeof res.writeHead;
      await asTheFunction(req, res, file);
    };
    answer = thenChange((file) => rmSync(file));
    try {
      const gone = await get('gone.mp4');
      expect(gone.status).toBe(404);
      expect(JSON.parse(gone.body.toString())).toMatchObject({ error: 'not_found' });
    } finally {
      answer = asTheFunction;
    }

    answer = thenChange((file) => {
      renameSync(file, `${file}.real`);
      symlinkSync(path.join(videoDir, VIDEO, 'elsewhere.mp4'), file);
    });
    try {
      await sealed('swapped.mp4', randomBytes(1000));
      const swapped = await get('swapped.mp4');
      expect(swapped.status).toBe(503);
      expect(JSON.parse(swapped.body.toString())).toMatchObject({ error: 'media_unavailable' });
    } finally {
      answer = asTheFunction;
    }
    expect(readFileSync(path.join(dir, 'access.log'), 'utf8')).not.toContain('token=');
  });
});
