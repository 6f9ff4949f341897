/**
 * The media edge under `npm start`: Debian's nginx in front, the stream function
 * deciding and nginx sending the bytes (X-Accel-Redirect), against the same
 * stack's function sending them itself (`/function/stream/…`, no edge header),
 * and the fallback stack without nginx (MEDIA_EDGE=off).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Agent, request } from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES_SEALED_MARK } from '../shared/crypto/images.js';
import { ORIGINAL_ENCRYPTED_MARK } from '../shared/crypto/original-response.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { auditEntriesOnceThere, readAuditEntries, type AuditLine } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';
import { rawRequest, type RawReply } from './helpers/raw-http.js';
import { createUpload, TUS } from './helpers/uploads.js';

const ORIGIN = 'https://player.example';
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
const token = (videoId: string, scope: string, lifetime = 120) => codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + lifetime, scope });


/** The headers of the stream contract (the rest — Date, Server, Connection, X-Call-Id — may differ). */
const CONTRACT = [
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'cache-control',
  'referrer-policy',
  'x-content-type-options',
  'strict-transport-security',
  'access-control-allow-origin',
  'access-control-expose-headers',
  'vary',
];
const isJson = (r: RawReply) => String(r.headers['content-type']).startsWith('application/json');
/** A JSON error's length depends on its request id (nginx's and the function's differ in form): compared without it. */
const contractOf = (r: RawReply) => ({ status: r.status, ...Object.fromEntries(CONTRACT.filter((h) => !(h === 'content-length' && isJson(r))).map((h) => [h, r.headers[h]])) });
/** Bytes, or a JSON error without its per-request id. */
const bodyOf = (r: RawReply) => (isJson(r) ? { ...JSON.parse(r.body.toString()), requestId: null } : r.body.toString('base64'));

/**
 * Two 8 MiB PATCHes of one upload at offset 0 over a keep-alive pool of two connections: exactly one
 * 204, the other refused (409/423) with a JSON body while most of its body is still unsent, and then a
 * HEAD on each connection answers at once (issue 31: behind nginx's pooled upstream connections it hung
 * 45 s, or the gateway answered 502, when the function closed the connection on its early refusal).
 * nginx itself closes a client connection whose body it had not finished reading when the answer came
 * (a FIN right after the refusal; it cannot keep it alive): a HEAD that a client sent on it in that
 * instant is sent again on a new connection, as RFC 9112 §9.3.1 lets clients (browsers do) retry an
 * idempotent request; a stall or a 502 still fails.
 */
async function concurrentPatchesAtOneOffset(base: string, allowedOrigin: string | undefined, serverMayClose: boolean): Promise<void> {
  const size = 8 * 1024 * 1024;
  const url = await createUpload(`${base}/uploads`, 2 * size);
  const agent = new Agent({ keepAlive: true, maxSockets: 2 });
  type Reply = { status: number; headers: Record<string, unknown>; body: string };
  const send = (method: string, body?: Buffer, via: Agent | false = agent): Promise<Reply> =>
    new Promise<Reply>((resolve, reject) => {
      const headers = body ? { ...TUS, Origin: ORIGIN, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' } : TUS;
      // 10 s: a HEAD answers in milliseconds, a PATCH of 8 MiB on loopback in well under a second.
      const req = request(url, { method, agent: via, headers, signal: AbortSignal.timeout(10_000) }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  try {
    const body = randomBytes(size);
    const patches = await Promise.all([send('PATCH', body), send('PATCH', body)]);
    const [won, refused] = patches.sort((x, y) => x.status - y.status);
    expect(won!.status).toBe(204);
    expect([409, 423]).toContain(refused!.status);
    expect(String(refused!.headers['content-type'])).toMatch(/^application\/json/);
    expect(JSON.parse(refused!.body)).toMatchObject({ error: expect.any(String), message: expect.any(String) });
    // Still a tus answer a browser can read: Tus-Resumable, and CORS as CORS_ORIGINS says.
    expect([refused!.headers['tus-resumable'], refused!.headers['access-control-allow-origin']]).toEqual(['1.0.0', allowedOrigin]);
    const closedUnderIt = (err: NodeJS.ErrnoException) => err.code === 'ECONNRESET' || err.message === 'socket hang up';
    const head = () => send('HEAD').catch((err: NodeJS.ErrnoException) => (serverMayClose && closedUnderIt(err) ? send('HEAD', undefined, false) : Promise.reject(err)));
    const heads = await Promise.all([head(), head()]);
    expect(heads.map((h) => [h.status, h.headers['upload-offset']])).toEqual([[200, String(size)], [200, String(size)]]);
  } finally {
    agent.destroy();
  }
}

describe('npm start with nginx installed: the media edge', () => {
  let stack: TestStack;
  let video: { videoId: string; dir: string };
  let outside: string | null = null;

  beforeAll(async () => {
    stack = await startStack({ env: { CORS_ORIGINS: ORIGIN, HSTS_ENABLED: 'true' } });
    video = await makeVideo(path.join(stack.mediaRoot, 'videos'));
    // A symlink inside the video's own directory: the function resolves it, nginx (disable_symlinks) gets the real path.
    symlinkSync(path.join(video.dir, 'hls', '240p_000.m4s'), path.join(video.dir, 'hls', 'alias.m4s'));
    // And a directory symlinked out of it: neither may send what lies there (nginx checks every component below VIDEO_DIR).
    outside = mkdtempSync(path.join(tmpdir(), 'pv-outside-'));
    writeFileSync(path.join(outside, 'secret.m4s'), 'not a segment of this video');
    symlinkSync(outside, path.join(video.dir, 'hls', 'outside'));
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    if (outside) rmSync(outside, { recursive: true, force: true });
  });

  const segment = () => `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token(video.videoId, 'hls/')}`;
  const original = () => `/media/videos/${video.videoId}/original.mp4?token=${token(video.videoId, 'original.mp4')}`;

  it('says so at start-up, and nginx (not the function) sends granted files', async () => {
    expect(stack.output()).toMatch(/media edge: nginx is the front door/);
    const res = await rawRequest(stack.url, segment());
    expect(res.status).toBe(200);
    expect(res.body.equals(readFileSync(path.join(video.dir, 'hls', '240p_000.m4s')))).toBe(true);
    expect(res.headers.server).toBe('nginx');
    // The function's own responses carry its name; a file sent by nginx does not.
    expect(res.headers['x-pulsevault-function']).toBeUndefined();
    const playlist = await rawRequest(stack.url, `/media/videos/${video.videoId}/hls/240p.m3u8?token=${token(video.videoId, 'hls/')}`);
    expect(playlist.headers['x-pulsevault-function']).toBe('stream');
  });

  it('answers every request exactly as the function does when it sends the bytes itself', async () => {
    const size = readFileSync(path.join(video.dir, 'original.mp4')).length;
    const etag = (await rawRequest(stack.url, original())).headers.etag as string;
    const segmentEtag = (await rawRequest(stack.url, segment())).headers.etag as string;
    const requests: [string, Record<string, string>, string?][] = [
      [original(), {}],
      [original(), { Origin: ORIGIN }],
      [original(), { Origin: 'https://evil.example' }],
      [original(), { Range: 'bytes=0-0' }],
      [original(), { Range: 'bytes=-500', Origin: ORIGIN }],
      [original(), { Range: 'bytes=100-99999999' }],
      [original(), { Range: `bytes=${size}-` }],
      [original(), { Range: 'bytes=0-1,10-20' }],
      [original(), { Range: 'bytes=abc' }],
      [original(), { Range: 'bytes=0-9', 'If-Range': etag }],
      [original(), { Range: 'bytes=0-9', 'If-Range': '"stale"' }],
      [original(), { 'If-None-Match': etag, Origin: ORIGIN }],
      // RFC 9110 §13.1.3 on both: not modified since a date at or after the file's, a future one too; an invalid one is ignored.
      [original(), { 'If-Modified-Since': new Date(Date.now() + 86_400_000).toUTCString() }],
      [original(), { 'If-Modified-Since': new Date(Date.now() + 1_000).toUTCString(), Origin: ORIGIN }],
      [original(), { 'If-Modified-Since': 'not a date' }],
      [segment(), { 'If-Modified-Since': new Date(Date.now() + 86_400_000).toUTCString() }],
      // A position no parser can hold: malformed, the whole file on both.
      [original(), { Range: 'bytes=0-99999999999999999999' }],
      [segment(), { Range: 'bytes=0-99999999999999999999' }],
      [segment(), { Range: 'bytes=99999999999999999999-' }],
      [original(), { Range: 'bytes=0-9' }, 'HEAD'],
      [original(), {}, 'HEAD'],
      [segment(), { Origin: ORIGIN }],
      [segment(), { Range: 'bytes=10-19', Origin: 'https://evil.example' }],
      [segment(), { 'If-None-Match': segmentEtag }],
      [segment(), { Range: 'bytes=0-1,5-6' }, 'HEAD'],
      [`/media/videos/${video.videoId}/hls/alias.m4s?token=${token(video.videoId, 'hls/')}`, {}],
      [`/media/videos/${video.videoId}/hls/outside/secret.m4s?token=${token(video.videoId, 'hls/')}`, {}],
      [`/media/videos/${video.videoId}/hls/240p.m3u8?token=${token(video.videoId, 'hls/')}`, { Origin: ORIGIN }],
      [`/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token(video.videoId, 'dash/')}`, {}],
      [`/media/videos/${video.videoId}/hls/missing.m4s?token=${token(video.videoId, 'hls/')}`, {}],
      [`/media/videos/${video.videoId}/meta.json?token=${token(video.videoId, 'meta.json')}`, {}],
    ];
    for (const [url, headers, method] of requests) {
      const viaEdge = await rawRequest(stack.url, url, headers, method);
      const byFunction = await rawRequest(stack.url, `/function/stream${url}`, headers, method);
      const what = `${method ?? 'GET'} ${url.split('?')[0]} ${JSON.stringify(headers)}`;
      expect(contractOf(viaEdge), what).toEqual(contractOf(byFunction));
      expect(bodyOf(viaEdge), what).toEqual(bodyOf(byFunction));
    }
  });

  it("answers what nginx itself refuses in the functions' JSON error shape", async () => {
    const cases: [string, string, Record<string, string>, number, string][] = [
      ['an internal location', `/_pulsevault_edge/whole/${video.videoId}/original.mp4`, {}, 404, 'not_found'],
      ['a NUL in the path', `/media/videos/${video.videoId}/hls/240p_000.m4s%00.m3u8?token=x`, {}, 400, 'bad_request'],
      ['a 20 KB URL', `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${'a'.repeat(20_000)}`, {}, 414, 'uri_too_long'],
      ['TRACE', `/media/videos/${video.videoId}/hls/240p_000.m4s`, {}, 405, 'method_not_allowed'],
      ['a 12 KB header', `/media/videos/${video.videoId}/hls/240p_000.m4s`, { Authorization: `Bearer ${'b'.repeat(12_000)}` }, 400, 'bad_request'],
    ];
    for (const [what, url, headers, status, error] of cases) {
      const res = await rawRequest(stack.url, url, headers, what === 'TRACE' ? 'TRACE' : 'GET');
      expect(res.status, what).toBe(status);
      expect(res.headers['content-type'], what).toBe('application/json; charset=utf-8');
      expect(res.headers['cache-control'], what).toBe('no-store');
      expect(JSON.parse(res.body.toString()), what).toMatchObject({ error, requestId: expect.stringMatching(/^[0-9a-f]{32}$/) });
    }
  });

  /** `stream` access entries of the video, as an auditor reads them from the files. */
  const isStreamEntry = (outcome: 'granted' | 'denied') => (e: AuditLine) => e.action === 'stream' && e.videoId === video.videoId && e.outcome === outcome;
  const streamEntries = (outcome: 'granted' | 'denied') => readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter(isStreamEntry(outcome)).length;
  /** How many such entries were added since `before`, once at least `expected` were (auditEntriesOnceThere). */
  const entriesSince = async (outcome: 'granted' | 'denied', before: number, expected: number) =>
    (await auditEntriesOnceThere(path.join(stack.mediaRoot, 'audit'), isStreamEntry(outcome), before + expected)).length - before;
  const hlsFile = (name: string, t: string) => `/media/videos/${video.videoId}/hls/${name}?token=${t}`;
  const bytesOf = (name: string) => readFileSync(path.join(video.dir, 'hls', name));

  it('asks the function once per token and rendition directory, audits that grant, and sends every file under it', async () => {
    // A lifetime no other test uses: tokens of equal claims are equal strings, and an earlier test's grant would be cached.
    const t = token(video.videoId, 'hls/', 130);
    let before = streamEntries('granted');
    const names = ['240p_init.mp4', '240p_000.m4s', '240p_001.m4s'];
    for (const name of names) {
      const res = await rawRequest(stack.url, hlsFile(name, t));
      expect(res.status, name).toBe(200);
      expect(res.body.equals(bytesOf(name)), name).toBe(true);
    }
    for (const name of names) expect((await rawRequest(stack.url, hlsFile(name, t), { Range: 'bytes=0-9' })).status).toBe(206);
    expect(await entriesSince('granted', before, 1)).toBe(1);
    // Another token (another exp: tokens of equal claims are equal) is another grant.
    expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', token(video.videoId, 'hls/', 100)))).status).toBe(200);
    expect(await entriesSince('granted', before, 2)).toBe(2);
    before += 2;
    // Concurrent first requests may each ask (no cache lock): every one of them is a granted, audited decision.
    const burstToken = token(video.videoId, 'hls/', 110);
    const burst = await Promise.all(names.map((name) => rawRequest(stack.url, hlsFile(name, burstToken))));
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200]);
    const burstGrants = await entriesSince('granted', before, 1);
    expect(burstGrants).toBeGreaterThanOrEqual(1);
    expect(burstGrants).toBeLessThanOrEqual(names.length);
  });

  it('an original encrypted in place (its mark, shared/crypto/migrate.ts): a grant cached while it was plaintext no longer sends it, the function decides each request and sends a plaintext one itself', async () => {
    const t = token(video.videoId, 'original.mp4', 135);
    const url = `/media/videos/${video.videoId}/original.mp4?token=${t}`;
    const bytes = readFileSync(path.join(video.dir, 'original.mp4'));
    const ranged = async (sentBy: string | undefined) => {
      const res = await rawRequest(stack.url, url, { Range: 'bytes=0-99' });
      expect([res.status, res.headers['x-pulsevault-function']]).toEqual([206, sentBy]);
      expect(res.body.equals(bytes.subarray(0, 100))).toBe(true);
    };
    const before = streamEntries('granted');
    for (let i = 0; i < 2; i++) await ranged(undefined); // sent by nginx
    expect(await entriesSince('granted', before, 1)).toBe(1); // granted once, then sent under the cached grant
    writeFileSync(path.join(video.dir, ORIGINAL_ENCRYPTED_MARK), '');
    try {
      // The plaintext from the file the function opened: nginx reopening the path could find the ciphertext the switch renames onto it.
      for (let i = 0; i < 2; i++) await ranged('stream');
      expect(await entriesSince('granted', before, 3)).toBe(3); // each one decided (and audited) by the function
      // The video's other files are still sent under their grants.
      const seg = token(video.videoId, 'hls/', 136);
      for (let i = 0; i < 2; i++) expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', seg))).status).toBe(200);
      expect(await entriesSince('granted', before, 4)).toBe(4);
    } finally {
      rmSync(path.join(video.dir, ORIGINAL_ENCRYPTED_MARK));
    }
  });

  it("a clear video's poster and sprites are sent by nginx under the grant; in a directory marked as holding sealed images (shared/crypto/images.ts) the function decides each image request", async () => {
    const t = token(video.videoId, 'hls/', 137);
    const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), randomBytes(2000)]);
    writeFileSync(path.join(video.dir, 'hls', 'poster.jpg'), jpeg);
    writeFileSync(path.join(video.dir, 'hls', 'thumbs_0_000.jpg'), jpeg);
    const before = streamEntries('granted');
    for (const name of ['poster.jpg', 'thumbs_0_000.jpg']) {
      const res = await rawRequest(stack.url, hlsFile(name, t));
      expect([res.status, res.headers['content-type'], res.headers['x-pulsevault-function']], name).toEqual([200, 'image/jpeg', undefined]);
      expect(res.body.equals(jpeg), name).toBe(true);
    }
    expect(await entriesSince('granted', before, 1)).toBe(1); // one grant of hls/, both sent under it
    writeFileSync(path.join(video.dir, 'hls', IMAGES_SEALED_MARK), '');
    try {
      for (const name of ['poster.jpg', 'thumbs_0_000.jpg']) {
        // Decided by the function under the cached grant too: this vault has no key, so it is an error, never the file.
        const res = await rawRequest(stack.url, hlsFile(name, t));
        expect([res.status, res.headers['x-pulsevault-function']], name).toEqual([500, 'stream']);
        expect(JSON.parse(res.body.toString()), name).toMatchObject({ error: 'key_missing' });
      }
      expect(await entriesSince('granted', before, 3)).toBe(3);
      // The directory's other files are still sent under the grant.
      const seg = await rawRequest(stack.url, hlsFile('240p_000.m4s', t));
      expect([seg.status, seg.headers['x-pulsevault-function']]).toEqual([200, undefined]);
      expect(await entriesSince('granted', before, 3)).toBe(3);
    } finally {
      rmSync(path.join(video.dir, 'hls', IMAGES_SEALED_MARK));
    }
  });

  it('decides and audits per request what a grant does not cover', async () => {
    // A token for one segment grants that file, not its directory.
    const one = token(video.videoId, 'hls/240p_000.m4s');
    let before = streamEntries('granted');
    for (let i = 0; i < 2; i++) expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', one))).status).toBe(200);
    expect((await rawRequest(stack.url, hlsFile('240p_001.m4s', one))).status).toBe(403);
    expect(await entriesSince('granted', before, 2)).toBe(2);

    // Refusals are never kept: each is the function's answer, audited.
    const wrong = token(video.videoId, 'dash/');
    before = streamEntries('denied');
    for (let i = 0; i < 2; i++) expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', wrong))).status).toBe(403);
    expect(await entriesSince('denied', before, 2)).toBe(2);

    // A token nginx does not see as `token` (encoded name) is served per request, and no grant is kept under "no token".
    const encoded = await rawRequest(stack.url, `/media/videos/${video.videoId}/hls/240p_000.m4s?%74oken=${token(video.videoId, 'hls/')}`);
    expect(encoded.status).toBe(200);
    const none = await rawRequest(stack.url, `/media/videos/${video.videoId}/hls/240p_000.m4s`);
    expect(none.status).toBe(403);
    expect(JSON.parse(none.body.toString()).error).toBe('token_missing');
  });

  it('hostile requests: the edge answers each as the function does and audits the same outcome, even with the grant cached', async () => {
    const t = token(video.videoId, 'hls/', 140);
    const file = `/media/videos/${video.videoId}/hls/240p_000.m4s`;
    // The grant of t for hls/ is cached now: whatever follows must not be sent under it unless the function would send it too.
    expect((await rawRequest(stack.url, `${file}?token=${t}`)).status).toBe(200);
    const corpus: [string, Record<string, string>, string?][] = [
      [`${file}?TOKEN=${t}`, {}],
      [`${file}?Token=${t}&token=junk`, {}],
      [`${file}?token=${t}&Token=junk`, {}],
      [`${file}?token=${t}&token=${t}`, {}],
      [`${file}?token=${t}&token=`, {}],
      [`/media/videos/${video.videoId}/hls%2f240p_000.m4s?token=${t}`, {}],
      [`/media/videos/${video.videoId}/hls//240p_000.m4s?token=${t}`, {}],
      [`/media/videos/${video.videoId}//hls/240p_000.m4s?token=${t}`, {}],
      [`${file}?token=${t}`, {}, 'POST'],
      [`${file}?token=${t}`, {}, 'PUT'],
      [`${file}?token=${t}`, {}, 'PATCH'],
      [`${file}?token=${t}`, {}, 'DELETE'],
      [`${file}?token=${t}`, {}, 'PROPFIND'],
      [`${file}?token=junk`, {}],
      [`${file}?token=${t.slice(0, -3)}`, {}],
    ];
    const auditOf = (since: number) =>
      readAuditEntries(path.join(stack.mediaRoot, 'audit'))
        .filter((e) => e.category === 'access')
        .slice(since)
        .map((e) => `${e.action} ${e.outcome} ${String(e.reason)}`);
    const accessCount = () => readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.category === 'access').length;
    const errorOf = (r: RawReply) => (isJson(r) ? (JSON.parse(r.body.toString()) as { error: string }).error : r.body.length);
    for (const [url, headers, method] of corpus) {
      const what = `${method ?? 'GET'} ${url.replace(t, '<t>')}`;
      let before = accessCount();
      const viaEdge = await rawRequest(stack.url, url, headers, method);
      const edgeAudit = auditOf(before);
      before = accessCount();
      const byFunction = await rawRequest(stack.url, `/function/stream${url}`, headers, method);
      const functionAudit = auditOf(before);
      expect(viaEdge.status, what).toBe(byFunction.status);
      expect(viaEdge.status, what).toBeGreaterThanOrEqual(400);
      expect(errorOf(viaEdge), what).toEqual(errorOf(byFunction));
      expect(edgeAudit, what).toEqual(functionAudit);
      expect(edgeAudit.some((e) => e.includes('granted')), what).toBe(false);
    }
    // A duplicate or case-variant token is a 400, and the denial is audited with the video.
    const twice = await rawRequest(stack.url, `/function/stream${file}?token=${t}&token=${t}`);
    expect(twice.status).toBe(400);
    const entries = readAuditEntries(path.join(stack.mediaRoot, 'audit'));
    expect(entries.at(-1)).toMatchObject({ action: 'stream', outcome: 'denied', reason: 'token_malformed', videoId: video.videoId });
  });

  it("edge headers from a client are not believed, on the OpenFaaS path or at the edge: the function answers as without them", async () => {
    const t = token(video.videoId, 'hls/', 150);
    const name = '240p_001.m4s';
    const file = `/media/videos/${video.videoId}/hls/${name}`;
    const forged = (value: string, tok: string) => ({ 'X-Media-Edge': value, 'X-Media-Edge-Token': tok, 'X-Media-Edge-File': `hls/${name}`, 'X-Media-Edge-Key': 'f'.repeat(64) });
    for (const value of ['grant', 'accel']) {
      const before = streamEntries('granted');
      const res = await rawRequest(stack.url, `/function/stream${file}?token=${t}`, forged(value, t));
      // The bytes themselves (not an empty grant or an X-Accel-Redirect), and the one entry for them.
      expect(res.status, value).toBe(200);
      expect(res.body.equals(bytesOf(name)), value).toBe(true);
      expect(res.headers['x-accel-expires'], value).toBeUndefined();
      expect(res.headers['x-accel-redirect'], value).toBeUndefined();
      expect(await entriesSince('granted', before, 1), value).toBe(1);
    }
    // A token that does not cover the file: refused and audited as any request (not an edge_grant_refused, unaudited).
    const wrong = token(video.videoId, 'dash/', 150);
    for (const url of [`/function/stream${file}?token=${wrong}`, `${file}?token=${wrong}`]) {
      const [granted, denied] = [streamEntries('granted'), streamEntries('denied')];
      const res = await rawRequest(stack.url, url, forged('grant', wrong));
      expect(res.status, url).toBe(403);
      expect(JSON.parse(res.body.toString()).error, url).toBe('out_of_scope');
      expect(await entriesSince('denied', denied, 1), url).toBe(1);
      expect(streamEntries('granted') - granted, url).toBe(0);
    }
  });

  it('50 concurrent first requests with 50 distinct tokens: exactly 50 grant entries', async () => {
    // Lifetimes no other test uses (tokens of equal claims are equal strings).
    const distinct = Array.from({ length: 50 }, (_, i) => token(video.videoId, 'hls/', 200 + i));
    expect(new Set(distinct).size).toBe(50);
    const before = streamEntries('granted');
    const replies = await Promise.all(distinct.map((t) => rawRequest(stack.url, hlsFile('240p_001.m4s', t))));
    expect(replies.map((r) => r.status)).toEqual(distinct.map(() => 200));
    expect(await entriesSince('granted', before, 50)).toBe(50);
  });

  it('keeps a grant no longer than its token', async () => {
    const shortLived = codec.sign({ videoId: video.videoId, exp: Math.floor(Date.now() / 1000) + 2, scope: 'hls/' });
    expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', shortLived))).status).toBe(200);
    // Past its exp the edge asks again (the function still grants within the clock skew, each time audited).
    await waitFor(async () => {
      const before = streamEntries('granted');
      expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', shortLived))).status).toBe(200);
      return streamEntries('granted') > before;
    }, 15_000, 'the edge to ask the function again once the token expired');
  });

  it('with Redis down keeps sending under grants already audited and refuses new ones (503, nothing unaudited)', async () => {
    const granted = token(video.videoId, 'hls/');
    expect((await rawRequest(stack.url, hlsFile('240p_000.m4s', granted))).status).toBe(200);
    await stack.redis.stop();
    try {
      const res = await rawRequest(stack.url, hlsFile('240p_001.m4s', granted));
      expect(res.status).toBe(200);
      expect(res.body.equals(bytesOf('240p_001.m4s'))).toBe(true);
      // A new grant needs a durable entry: refused once the writer stops recording (it may still record, directly
      // under its lease, for a moment after Redis went away: a grant made then is audited).
      let life = 90;
      const refused = await waitFor(async () => {
        const answer = await rawRequest(stack.url, hlsFile('240p_001.m4s', token(video.videoId, 'hls/', life++)));
        return answer.status === 503 && answer;
      }, 20_000, 'a new grant to be refused');
      expect(JSON.parse(refused.body.toString()).error).toBe('audit_unavailable');
    } finally {
      await stack.redis.start();
    }
  });

  it('concurrent PATCHes at one offset through nginx: one 204, a JSON refusal, and the next requests answer (nginx closes the refused connection at once)', async () => {
    await concurrentPatchesAtOneOffset(stack.url, ORIGIN, true);
  });

  it('logs each request without its query string (no token) and without the client address', async () => {
    const accessLog = /"accessLog":"([^"]+)"/.exec(stack.output())![1]!;
    const seg = segment();
    await rawRequest(stack.url, seg);
    const lines = await waitFor(() => {
      const text = readFileSync(accessLog, 'utf8');
      return text.includes(seg.split('?')[0]!) && text;
    }, 10_000, 'the access log line');
    expect(lines).not.toMatch(/token|\?|127\.0\.0\.1/);
    expect(lines).toContain(`"path":"${seg.split('?')[0]}"`);
  });
});

describe('npm start without the media edge (MEDIA_EDGE=off, as without nginx)', () => {
  let stack: TestStack;
  let video: { videoId: string; dir: string };

  beforeAll(async () => {
    stack = await startStack({ env: { MEDIA_EDGE: 'off' } });
    video = await makeVideo(path.join(stack.mediaRoot, 'videos'));
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
  });

  it('says so at start-up, and the stream function sends the bytes itself', async () => {
    expect(stack.output()).toMatch(/the stream function sends media bytes itself/);
    const res = await rawRequest(stack.url, `/media/videos/${video.videoId}/original.mp4?token=${token(video.videoId, 'original.mp4')}`, { Range: 'bytes=10-19' });
    expect(res.status).toBe(206);
    expect(res.body.equals(readFileSync(path.join(video.dir, 'original.mp4')).subarray(10, 20))).toBe(true);
    expect(res.headers.server).toBeUndefined();
    expect(res.headers['x-pulsevault-function']).toBe('stream');
  });

  it('concurrent PATCHes at one offset through the gateway: one 204, a JSON refusal, and the next request on each connection answers', async () => {
    await concurrentPatchesAtOneOffset(stack.url, undefined, false);
  });
});
