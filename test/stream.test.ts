/** stream through the real local stack: tokens, scopes, traversal, ranges, playlists, audit. */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DOMParser } from '@xmldom/xmldom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { readAuditEntries } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, TEST_HMAC_SECRET, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';
import { rawRequest, type RawReply } from './helpers/raw-http.js';

const OLD_SECRET = 'old-hmac-secret-0123456789abcdef0123456789';
const ORIGIN = 'https://player.example';
const OUTSIDE = 'TOP-SECRET-OUTSIDE-THE-VIDEO-DIR';

/** Raw HTTP (fetch would normalise `../` and backslashes before sending). */
const raw = (stack: TestStack, pathAndQuery: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawReply> => rawRequest(stack.url, pathAndQuery, headers, method);

let stack: TestStack;
let video: { videoId: string; dir: string };
let other: { videoId: string; dir: string };
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
const now = () => Math.floor(Date.now() / 1000);
const token = (scope: string, videoId = video.videoId, exp = now() + 120) => codec.sign({ videoId, exp, scope });

async function sign(videoId: string, p: string): Promise<string> {
  const res = await fetch(`${stack.url}/media/sign`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ videoId, path: p }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { url: string }).url;
}

async function auditEntries(): Promise<Record<string, unknown>[]> {
  return readAuditEntries(path.join(stack.mediaRoot, 'audit'));
}

beforeAll(async () => {
  stack = await startStack({ env: { HMAC_SECRET_PREVIOUS: OLD_SECRET, CORS_ORIGINS: ORIGIN, HSTS_ENABLED: 'true' } });
  const videoDir = path.join(stack.mediaRoot, 'videos');
  [video, other] = await Promise.all([makeVideo(videoDir), makeVideo(videoDir)]);
  writeFileSync(path.join(stack.mediaRoot, 'outside.mp4'), OUTSIDE);
  symlinkSync(path.join(stack.mediaRoot, 'outside.mp4'), path.join(video.dir, 'hls', 'planted.m4s'));
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

describe('stream: one signed URL plays a whole ladder', () => {
  it('tokenises every child URI of the HLS master and media playlists, and each fetch succeeds', async () => {
    const masterUrl = await sign(video.videoId, 'hls/master.m3u8');
    const master = await fetch(`${stack.url}${masterUrl}`);
    expect(master.status).toBe(200);
    expect(master.headers.get('content-type')).toBe('application/vnd.apple.mpegurl');
    const tokenOf = new URL(masterUrl, stack.url).searchParams.get('token')!;
    const fetched: string[] = [];
    const visit = async (playlistPath: string, text: string) => {
      for (const line of text.split('\n')) {
        const uris = line.startsWith('#') ? [...line.matchAll(/URI="([^"]+)"/g)].map((m) => m[1]!) : line.trim() ? [line.trim()] : [];
        for (const uri of uris) {
          expect(uri).toMatch(new RegExp(`[?&]token=${tokenOf.replace(/\./g, '\\.')}$`));
          const child = new URL(uri, `${stack.url}/media/videos/${video.videoId}/${playlistPath}`);
          const res = await fetch(child);
          expect(res.status, child.pathname).toBe(200);
          fetched.push(child.pathname.split('/').pop()!);
          if (child.pathname.endsWith('.m3u8')) await visit(child.pathname.split(`${video.videoId}/`)[1]!, await res.text());
          else await res.arrayBuffer();
        }
      }
    };
    await visit('hls/master.m3u8', await master.text());
    const segments = readdirSync(path.join(video.dir, 'hls')).filter((f) => /^240p_\d{3}\.m4s$/.test(f)).sort();
    expect(segments.length).toBeGreaterThan(0);
    expect(fetched).toEqual(['240p.m3u8', '240p_init.mp4', ...segments]);
  });

  it('tokenises the DASH manifest (parsed as XML) and its segments play with it', async () => {
    const url = await sign(video.videoId, 'dash/manifest.mpd');
    const res = await fetch(`${stack.url}${url}`);
    expect(res.headers.get('content-type')).toBe('application/dash+xml');
    const doc = new DOMParser().parseFromString(await res.text(), 'application/xml');
    const templates = Array.from(doc.getElementsByTagName('SegmentTemplate'));
    expect(templates).toHaveLength(2);
    for (const t of templates) {
      const init = t.getAttribute('initialization')!.replace('$RepresentationID$', '0');
      expect(t.getAttribute('media')).toMatch(/\?token=v1\./);
      expect((await fetch(new URL(init, `${stack.url}/media/videos/${video.videoId}/dash/`))).status).toBe(200);
    }
  });
});

describe('stream: scope is exact', () => {
  it.each([
    ['hls token, other video', () => `/media/videos/${other.videoId}/hls/master.m3u8?token=${token('hls/')}`],
    ['original token, hls', () => `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token('original.mp4')}`],
    ['hls token, dash', () => `/media/videos/${video.videoId}/dash/manifest.mpd?token=${token('hls/')}`],
    ['hls token, original', () => `/media/videos/${video.videoId}/original.mp4?token=${token('hls/')}`],
  ])('refuses %s with 403', async (_name, make) => {
    const res = await raw(stack, make());
    expect(res.status).toBe(403);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
  });

  it.each([
    ['two tokens', () => `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token('hls/')}&token=${token('hls/')}`],
    ['a case-variant name', () => `/media/videos/${video.videoId}/hls/240p_000.m4s?TOKEN=${token('hls/')}`],
    ['a case-variant beside the token', () => `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token('hls/')}&Token=x`],
  ])('refuses %s with 400 token_malformed', async (_name, make) => {
    const res = await raw(stack, make());
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString()).error).toBe('token_malformed');
  });
});

describe('stream: bad tokens', () => {
  it('answers 403 for each, serves nothing and records an audit entry with the reason and without the token', async () => {
    const good = token('original.mp4');
    const cases: [string, string][] = [
      ['tampered', good.slice(0, -2) + (good.endsWith('AA') ? 'BB' : 'AA')],
      ['expired', token('original.mp4', video.videoId, now() - 120)],
      ['wrong video', token('original.mp4', other.videoId)],
      ['wrong scope', token('hls/')],
      ['unknown kid', createTokenCodec({ secret: 'z'.repeat(40), maxLifetimeSeconds: 300, clockSkewSeconds: 0 }).sign({ videoId: video.videoId, exp: now() + 60, scope: 'original.mp4' })],
      ['truncated', good.slice(0, 40)],
      ['empty', ''],
      ['oversize', good + 'A'.repeat(600)],
      ['missing', 'NONE'],
    ];
    const expected = ['bad_signature', 'token_expired', 'wrong_video', 'out_of_scope', 'unknown_kid', 'token_malformed', 'token_missing', 'token_oversize', 'token_missing'];
    const before = (await auditEntries()).length;
    for (const [name, t] of cases) {
      const res = await raw(stack, `/media/videos/${video.videoId}/original.mp4${t === 'NONE' ? '' : `?token=${t}`}`);
      expect(res.status, name).toBe(403);
      expect(res.body.length, name).toBeLessThan(300);
      expect(res.body.includes(Buffer.from('ftyp')), name).toBe(false);
    }
    const entries = await waitFor(async () => {
      const all = await auditEntries();
      return all.length >= before + cases.length && all.slice(before);
    });
    const denied = entries.filter((e) => e.action === 'stream' && e.outcome === 'denied');
    expect(denied.map((e) => e.reason)).toEqual(expected);
    for (const e of denied) {
      const text = JSON.stringify(e);
      expect(text).not.toMatch(/v1\.[A-Za-z0-9_-]{8}\./);
      expect(text).not.toContain('PHI');
      expect(e.category).toBe('access');
    }
  });

  it('keeps accepting tokens of the previous secret (rotation)', async () => {
    const old = createTokenCodec({ secret: OLD_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 }).sign({ videoId: video.videoId, exp: now() + 60, scope: 'original.mp4' });
    expect((await raw(stack, `/media/videos/${video.videoId}/original.mp4?token=${old}`)).status).toBe(200);
  });
});

describe('stream: non-regular files', () => {
  it('answers 404 at once for a FIFO in a video dir, however many ask, and keeps serving', async () => {
    const fifo = path.join(other.dir, 'hls', 'stuck.m4s');
    execFileSync('mkfifo', [fifo]);
    const url = `${stack.url}/media/videos/${other.videoId}/hls/stuck.m4s?token=${token('hls/', other.videoId)}`;
    try {
      // More than the 4 libuv I/O threads: a blocking open() would starve every later file request.
      const replies = await Promise.all(Array.from({ length: 8 }, () => fetch(url, { signal: AbortSignal.timeout(5_000) })));
      expect(replies.map((r) => r.status)).toEqual(Array(8).fill(404));
      const normal = await fetch(`${stack.url}/media/videos/${other.videoId}/original.mp4?token=${token('original.mp4', other.videoId)}`, { signal: AbortSignal.timeout(5_000) });
      expect(normal.status).toBe(200);
      await normal.arrayBuffer();
    } finally {
      // Release any open() still blocked on the FIFO (there is a reader only if one is stuck).
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // ENXIO: no reader is waiting
      }
      rmSync(fifo);
    }
  });
});

describe('stream: traversal corpus', () => {
  const corpus = [
    'hls/../meta.json', 'hls/%2e%2e/meta.json', 'hls/%2e%2e%2fmeta.json', 'hls/..%2fmeta.json', 'hls/%252e%252e%252fmeta.json', 'hls/..\\meta.json',
    'hls/..%5cmeta.json', 'hls/240p_000.m4s%00', 'hls/%00/../meta.json', 'hls/%c0%ae%c0%ae/meta.json', 'hls/%c0%ae%c0%ae%c0%afmeta.json',
    'hls//etc/passwd', 'hls/%2fetc%2fpasswd', 'hls/../../outside.mp4', 'hls/..%2f..%2f..%2foutside.mp4', 'meta.json', 'meta.tmp.json',
    'hls/planted.m4s', 'hls/../../../../../../etc/passwd', 'hls/.%2e/meta.json',
  ];
  it.each(corpus)('%s → 4xx, never a byte from outside the video dir', async (p) => {
    const res = await raw(stack, `/media/videos/${video.videoId}/${p}?token=${token('hls/')}`);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.toString('latin1')).not.toContain(OUTSIDE);
    expect(res.body.toString('latin1')).not.toContain('PHI');
    expect(res.body.toString('latin1')).not.toContain('root:');
  });

  it('refuses ids that are not UUIDs', async () => {
    expect((await raw(stack, `/media/videos/..%2f..%2foutside/original.mp4?token=${token('original.mp4')}`)).status).toBe(404);
    expect((await raw(stack, `/media/videos/${video.videoId.toUpperCase()}/original.mp4?token=${token('original.mp4')}`)).status).toBe(404);
  });
});

describe('stream: ranges, validators and headers', () => {
  const url = () => `/media/videos/${video.videoId}/original.mp4?token=${token('original.mp4')}`;
  const file = () => readFileSync(path.join(video.dir, 'original.mp4'));

  it('serves whole files and single ranges byte-exact', async () => {
    const bytes = file();
    const size = bytes.length;
    const full = await raw(stack, url(), { Origin: ORIGIN });
    expect(full.status).toBe(200);
    expect(full.body.equals(bytes)).toBe(true);
    expect(full.headers).toMatchObject({
      'content-type': 'video/mp4',
      'content-length': String(size),
      'accept-ranges': 'bytes',
      'cache-control': 'private',
      'strict-transport-security': expect.stringMatching(/^max-age=\d+/),
      'access-control-allow-origin': ORIGIN,
      'x-content-type-options': 'nosniff',
    });
    expect(full.headers.etag).toMatch(/^"[0-9a-f-]+"$/);
    expect(full.headers['last-modified']).toBeTruthy();

    const cases: [string, number, number][] = [['bytes=0-0', 0, 0], ['bytes=-500', size - 500, size - 1], ['bytes=500-', 500, size - 1], ['bytes=100-99999999', 100, size - 1]];
    for (const [range, start, end] of cases) {
      const res = await raw(stack, url(), { Range: range });
      expect(res.status, range).toBe(206);
      expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/${size}`);
      expect(res.body.equals(bytes.subarray(start, end + 1)), range).toBe(true);
    }
    const past = await raw(stack, url(), { Range: `bytes=${size}-` });
    expect(past.status).toBe(416);
    expect(past.headers['content-range']).toBe(`bytes */${size}`);
    for (const range of ['bytes=0-1,10-20', 'garbage', 'bytes=abc']) {
      const res = await raw(stack, url(), { Range: range });
      expect(res.status, range).toBe(200);
      expect(res.body.length).toBe(size);
    }
    expect((await raw(stack, url(), { Origin: 'https://evil.example' })).headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers If-None-Match with 304 and honours If-Range only while the file is unchanged; HEAD mirrors GET', async () => {
    const first = await raw(stack, url());
    const etag = first.headers.etag as string;
    expect((await raw(stack, url(), { 'If-None-Match': etag })).status).toBe(304);
    expect((await raw(stack, url(), { Range: 'bytes=0-9', 'If-Range': etag })).status).toBe(206);
    expect((await raw(stack, url(), { Range: 'bytes=0-9', 'If-Range': '"stale"' })).status).toBe(200);
    const head = await raw(stack, url(), { Range: 'bytes=0-9' }, 'HEAD');
    const get = await raw(stack, url(), { Range: 'bytes=0-9' });
    expect(head.status).toBe(206);
    expect(head.body.length).toBe(0);
    for (const h of ['content-type', 'content-length', 'content-range', 'etag', 'last-modified', 'accept-ranges', 'cache-control']) expect(head.headers[h], h).toBe(get.headers[h]);
  });

  it('uses the media type of each extension', async () => {
    const seg = await raw(stack, `/media/videos/${video.videoId}/hls/240p_000.m4s?token=${token('hls/')}`);
    expect(seg.headers['content-type']).toBe('video/iso.segment');
    const pre = await raw(stack, `/media/videos/${video.videoId}/hls/240p_000.m4s`, { Origin: ORIGIN, 'Access-Control-Request-Method': 'GET' }, 'OPTIONS');
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-headers']).toMatch(/Range/);
  });

  it('counts the bytes it serves', async () => {
    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    expect(metrics).toMatch(/# HELP pulsevault_stream_bytes_total /);
    expect(metrics).toMatch(/pulsevault_token_denials_total\{[^}]*reason="token_expired"[^}]*\} [1-9]/);
  });
});

describe('stream: audit is fail-closed', () => {
  it('refuses with 503 while the audit log cannot record, and serves again once it can', async () => {
    await stack.redis.stop();
    try {
      // Each try a token no request has used yet: behind the media edge, one already granted stays granted (it was
      // audited). The writer may still record for a moment (directly, under its lease): until it stops, a request is
      // served with its entry durable; then it is refused.
      let expiry = now() + 77;
      const res = await waitFor(async () => {
        const answer = await raw(stack, `/media/videos/${video.videoId}/original.mp4?token=${token('original.mp4', video.videoId, expiry++)}`);
        return answer.status === 503 && answer;
      }, 20_000, 'stream to refuse while the audit log cannot record');
      expect(res.body.toString()).toMatch(/audit_unavailable/);
    } finally {
      await stack.redis.start();
    }
    await waitFor(async () => (await raw(stack, `/media/videos/${video.videoId}/original.mp4?token=${token('original.mp4')}`)).status === 200, 20_000, 'stream to recover');
  });
});
