/**
 * Two tus-upload processes on one upload directory and one Redis, as two
 * replicas behind a gateway that may send any request to either.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { createUpload, offsetOf, patch, streamingPatch, TUS, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';

let redis: TestRedis;
let mediaRoot: string;
let a: FunctionProcess;
let b: FunctionProcess;
const extra: FunctionProcess[] = [];

const env = () => ({ MEDIA_ROOT: mediaRoot, REDIS_URL: redis.url, UPLOAD_EXPIRY_HOURS: '1', UPLOAD_SWEEP_INTERVAL_SECONDS: '1' });
const uploadDir = () => path.join(mediaRoot, 'uploads');
const onReplica = (replica: FunctionProcess, url: string) => `${replica.url}${new URL(url).pathname}`;

beforeAll(async () => {
  redis = await startRedis();
  mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-tus-replicas-'));
  [a, b] = await Promise.all([startFunctionProcess('tus-upload', env()), startFunctionProcess('tus-upload', env())]);
});

afterAll(async () => {
  await Promise.all([a, b, ...extra].filter(Boolean).map((p) => p.stop()));
  await redis?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

describe('two tus-upload replicas', () => {
  it('serialise concurrent PATCHes of one upload: exactly one wins each round, the bytes equal the source', async () => {
    const source = randomBytes(16 * 64 * 1024);
    const url = await createUpload(`${a.url}/uploads`, source.length);
    const chunk = 64 * 1024;
    for (let offset = 0; offset < source.length; offset += chunk) {
      const body = source.subarray(offset, offset + chunk);
      const statuses = (await Promise.all([patch(onReplica(a, url), offset, body), patch(onReplica(b, url), offset, body)])).map((r) => r.status);
      expect(statuses.sort()).toEqual([204, 409]);
    }
    expect(readFileSync(path.join(uploadDir(), uploadIdOf(url))).equals(source)).toBe(true);
  });

  it('lets a new PATCH on the other replica take over a stalled one (release request), then resume at the stored offset', async () => {
    const source = randomBytes(2 * 1024 * 1024);
    const half = source.length / 2;
    const url = await createUpload(`${a.url}/uploads`, source.length);
    const file = path.join(uploadDir(), uploadIdOf(url));

    // A client sends half the file to replica A and then stalls (half-open connection).
    const stalled = streamingPatch(onReplica(a, url), 0);
    stalled.send(source.subarray(0, half));
    await waitFor(() => statSync(file).size === half, 10_000, 'the first half on disk');

    // The client reconnects through replica B and retries from 0: B asks A to let go, A stops,
    // and B refuses the stale offset instead of writing over the stored bytes.
    const retry = await patch(onReplica(b, url), 0, source);
    expect(retry.status).toBe(409);
    const first = await stalled.response;
    if (first) expect(first.headers.get('upload-offset')).toBe(String(half));
    stalled.end();

    const offset = await offsetOf(onReplica(b, url));
    expect(offset).toBe(half);
    expect((await patch(onReplica(a, url), offset, source.subarray(offset))).status).toBe(204);
    expect(readFileSync(file).equals(source)).toBe(true);
  });

  it('sweeps expired incomplete uploads and abandoned complete ones once, never a fresh one, one awaiting finalize or one being written', async () => {
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000).toISOString();
    const age = (url: string) => {
      const info = path.join(uploadDir(), `${uploadIdOf(url)}.json`);
      writeFileSync(info, JSON.stringify({ ...JSON.parse(readFileSync(info, 'utf8')), creation_date: twoHoursAgo }));
    };
    const stale = await createUpload(`${a.url}/uploads`, 10);
    await patch(stale, 0, Buffer.from('abc'));
    const fresh = await createUpload(`${a.url}/uploads`, 10);
    const complete = await createUpload(`${b.url}/uploads`, 3);
    await patch(complete, 0, Buffer.from('abc'));
    // Complete, but its last byte arrived two hours ago and nobody finalized it.
    const abandoned = await createUpload(`${b.url}/uploads`, 3);
    await patch(abandoned, 0, Buffer.from('xyz'));
    const abandonedFile = path.join(uploadDir(), uploadIdOf(abandoned));
    const writing = await createUpload(`${b.url}/uploads`, 10);
    const slow = streamingPatch(writing, 0);
    slow.send(Buffer.from('ab'));
    const writingFile = path.join(uploadDir(), uploadIdOf(writing));
    await waitFor(() => statSync(writingFile).size === 2, 10_000, 'the slow PATCH to start writing');
    for (const u of [stale, complete, abandoned, writing]) age(u);
    // Last: from this moment a sweep may remove the abandoned upload (and its info file, which age() reads).
    utimesSync(abandonedFile, new Date(twoHoursAgo), new Date(twoHoursAgo));

    const sweeps = () =>
      [a, b]
        .flatMap((p) => p.output().split('\n'))
        .filter((l) => l.includes('expiry sweep done'))
        .map((l) => JSON.parse(l) as { removed: number; abandoned: number; busy: number });
    await waitFor(() => sweeps().some((s) => s.busy >= 1) && !existsSync(path.join(uploadDir(), uploadIdOf(stale))) && !existsSync(abandonedFile), 20_000, 'a sweep');
    for (const gone of [stale, abandoned]) expect(existsSync(path.join(uploadDir(), `${uploadIdOf(gone)}.json`))).toBe(false);
    for (const kept of [fresh, complete, writing]) expect(existsSync(path.join(uploadDir(), uploadIdOf(kept)))).toBe(true);
    // (tus itself answers 410 to HEAD/PATCH of an upload past expiry; a complete one stays finalizable
    // for UPLOAD_EXPIRY_HOURS after its last byte, whenever it was created.)
    expect(readFileSync(path.join(uploadDir(), uploadIdOf(complete)), 'utf8')).toBe('abc');

    // Once the writer is gone, the stalled (expired, incomplete) upload goes too.
    slow.end();
    await slow.response;
    await waitFor(() => !existsSync(writingFile), 20_000, 'the abandoned upload to be swept');
    // Two replicas sweeping: each removal happened exactly once.
    const removed = () => sweeps().reduce((n, s) => n + s.removed, 0);
    await waitFor(() => removed() >= 3, 10_000, 'the sweep log lines');
    expect(removed()).toBe(3);
    expect(sweeps().reduce((n, s) => n + s.abandoned, 0)).toBe(1);
  });
});

describe('Location behind proxies', () => {
  it('ignores forwarded headers unless TRUST_PROXY, keeps the first hop, and PUBLIC_URL overrides', async () => {
    const forwarded = { 'X-Forwarded-Host': 'vault.example.org', 'X-Forwarded-Proto': 'https, http' };
    const post = (replica: FunctionProcess, headers: Record<string, string>) =>
      fetch(`${replica.url}/uploads`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '1', ...headers } });

    // Untrusted: the client's forwarded headers change nothing, and a chained proto is not a 400.
    const untrusted = await post(a, forwarded);
    expect(untrusted.status).toBe(201);
    expect(untrusted.headers.get('location')).toMatch(/^uploads\/[0-9a-f-]{36}$/);

    const [trusting, publicUrl] = await Promise.all([
      startFunctionProcess('tus-upload', { ...env(), TRUST_PROXY: '127.0.0.1,::1' }),
      startFunctionProcess('tus-upload', { ...env(), PUBLIC_URL: 'https://media.example.org/vault/' }),
    ]);
    extra.push(trusting, publicUrl);

    const behindIngress = await post(trusting, forwarded);
    const location = behindIngress.headers.get('location')!;
    expect(location).toMatch(/^https:\/\/vault\.example\.org\/uploads\/[0-9a-f-]{36}$/);
    // Following it (the ingress maps vault.example.org to this function) reaches the same upload.
    expect(await offsetOf(`${trusting.url}${new URL(location).pathname}`)).toBe(0);
    // A forwarded host that is not a host name is not trusted: back to the relative reference.
    expect((await post(trusting, { 'X-Forwarded-Host': 'evil.example/x?y' })).headers.get('location')).toMatch(/^uploads\//);

    const viaPublic = await post(publicUrl, forwarded);
    expect(viaPublic.headers.get('location')).toMatch(/^https:\/\/media\.example\.org\/vault\/uploads\/[0-9a-f-]{36}$/);
  });
});
