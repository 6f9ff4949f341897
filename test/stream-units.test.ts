/** Unit and property tests of the stream function's parts: path resolver, range planning, playlist rewriting. */
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../shared/platform/errors.js';
import { MediaFiles, parseMediaPath, parseUrlMediaPath, scopeForPath } from '../shared/delivery/media-path.js';
import { planResponse, type Validators } from '../shared/delivery/media-response.js';
import { PlaylistCache } from '../shared/delivery/playlist-rewrite.js';

const SAFE = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/;

describe('media path resolver', () => {
  it.each([
    '../meta.json', '..%2fmeta.json', '%2e%2e%2fmeta.json', '%2e%2e/meta.json', 'hls/..%2f..%2fetc%2fpasswd', '%252e%252e%252fmeta.json',
    '..\\meta.json', 'hls%5c..%5cmeta.json', 'original.mp4%00.m3u8', 'hls/%00', '%c0%ae%c0%ae/meta.json', '%c0%afetc',
    '/etc/passwd', '%2fetc%2fpasswd', 'meta.json', 'meta.tmp.1a2b.json', 'hls/seg.m4s.tmp', 'hls.tmp/master.m3u8', '.hidden.mp4',
    'hls/.staging/a.m4s', 'hls//a.m4s', 'hls/./a.m4s', '', 'original', 'original.exe', 'a/b/c/d/e.m4s', `${'a'.repeat(129)}.mp4`,
  ])('refuses %j', (raw) => {
    expect(() => parseUrlMediaPath(raw)).toThrow(expect.objectContaining({ status: 400, code: 'invalid_path' }));
  });

  it('accepts media paths and decodes exactly once', () => {
    expect(parseUrlMediaPath('hls/240p.m3u8')).toBe('hls/240p.m3u8');
    expect(parseUrlMediaPath('hls/240p%2Em3u8')).toBe('hls/240p.m3u8');
    expect(parseMediaPath('dash/seg-001.m4s')).toBe('dash/seg-001.m4s');
  });

  it('accepts only safe relative paths, whatever the input (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.webPath(), fc.array(fc.constantFrom('..', '.', '%2e', '%2f', '%5c', '\\', '/', 'a', 'm4s', '%00', '%', 'meta'), { maxLength: 8 }).map((a) => a.join(''))), (raw) => {
        let out: string;
        try {
          out = parseUrlMediaPath(raw);
        } catch (err) {
          expect(err).toBeInstanceOf(AppError);
          expect((err as AppError).status).toBe(400);
          return;
        }
        expect(out).toMatch(SAFE);
        expect(out.split('/')).not.toContain('..');
        expect(path.posix.normalize(out)).toBe(out);
      }),
    );
  });

  it('grants a playlist its directory and anything else itself', () => {
    expect(scopeForPath('hls/master.m3u8')).toBe('hls/');
    expect(scopeForPath('dash/manifest.mpd')).toBe('dash/');
    expect(scopeForPath('original.mp4')).toBe('original.mp4');
    expect(() => scopeForPath('master.m3u8')).toThrow(expect.objectContaining({ status: 400 }));
  });

  it('opens files of the video only, never through a symlink leaving it', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pv-paths-'));
    const id = '0b6f1c7e-3a52-4d0e-9f3a-6f1f2c3d4e5f';
    const other = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
    mkdirSync(path.join(root, id, 'hls'), { recursive: true });
    mkdirSync(path.join(root, other), { recursive: true });
    writeFileSync(path.join(root, id, 'hls', 'a.m4s'), 'inside');
    writeFileSync(path.join(root, id, 'meta.json'), '{}');
    writeFileSync(path.join(root, other, 'original.mp4'), 'other video');
    writeFileSync(path.join(root, 'secret.mp4'), 'outside');
    symlinkSync(path.join(root, 'secret.mp4'), path.join(root, id, 'hls', 'escape.m4s'));
    symlinkSync(path.join(root, other, 'original.mp4'), path.join(root, id, 'hls', 'neighbour.m4s'));
    symlinkSync('../meta.json', path.join(root, id, 'hls', 'meta-link.json'));
    symlinkSync('a.m4s', path.join(root, id, 'hls', 'alias.m4s'));
    const files = new MediaFiles(root);
    const read = async (p: string) => {
      const { handle } = await files.open(id, p);
      try {
        return await handle.readFile('utf8');
      } finally {
        await handle.close();
      }
    };
    expect(await read('hls/a.m4s')).toBe('inside');
    expect(await read('hls/alias.m4s')).toBe('inside');
    for (const p of ['hls/escape.m4s', 'hls/neighbour.m4s', 'hls/meta-link.json']) {
      await expect(read(p)).rejects.toMatchObject({ status: 404, code: 'path_escape' });
    }
    await expect(read('hls/missing.m4s')).rejects.toMatchObject({ status: 404 });
    await expect(files.open(id, 'hls')).rejects.toMatchObject({ status: 404 }); // a directory is never served
  });
});

describe('range and conditional planning', () => {
  const v: Validators = { etag: '"64-1-2"', lastModified: new Date(1_700_000_000_000).toUTCString() };
  const plan = (headers: Record<string, string>, size = 1000) => planResponse({ size, validators: v }, headers);

  it('handles the range edge cases', () => {
    expect(plan({})).toMatchObject({ status: 200, start: 0, end: 999, headers: { 'Content-Length': '1000', 'Accept-Ranges': 'bytes', ETag: v.etag } });
    expect(plan({ range: 'bytes=0-0' })).toMatchObject({ status: 206, start: 0, end: 0, headers: { 'Content-Range': 'bytes 0-0/1000', 'Content-Length': '1' } });
    expect(plan({ range: 'bytes=-500' })).toMatchObject({ status: 206, start: 500, end: 999 });
    // RFC 9110 §14.1.3: a suffix longer than the file selects the whole file.
    expect(plan({ range: 'bytes=-5000' })).toMatchObject({ status: 206, start: 0, end: 999, headers: { 'Content-Range': 'bytes 0-999/1000' } });
    expect(plan({ range: 'bytes=-0' })).toMatchObject({ status: 416 });
    expect(plan({ range: 'bytes=500-' })).toMatchObject({ status: 206, start: 500, end: 999 });
    expect(plan({ range: 'bytes=900-5000' })).toMatchObject({ status: 206, start: 900, end: 999, headers: { 'Content-Range': 'bytes 900-999/1000' } });
    expect(plan({ range: 'bytes=1000-' })).toMatchObject({ status: 416, headers: { 'Content-Range': 'bytes */1000' } });
    expect(plan({ range: 'bytes=0-1,5-9' })).toMatchObject({ status: 200, start: 0, end: 999 });
    expect(plan({ range: 'bytes=0-9,5-19' })).toMatchObject({ status: 206, start: 0, end: 19 }); // overlapping ranges combine
    expect(plan({ range: 'garbage' })).toMatchObject({ status: 200 });
    expect(plan({ range: 'items=0-1' })).toMatchObject({ status: 200 });
    // Beyond 2^53 (nginx refuses it, range-parser would round it): malformed, the whole file, at the edge too.
    expect(plan({ range: 'bytes=0-99999999999999999999' })).toMatchObject({ status: 200, start: 0, end: 999 });
    expect(plan({ range: 'bytes=0-999999999999999' })).toMatchObject({ status: 206, start: 0, end: 999 });
    expect(plan({ range: 'bytes=0-0' }, 0)).toMatchObject({ status: 416, headers: { 'Content-Range': 'bytes */0' } });
  });

  it('answers conditional requests', () => {
    expect(plan({ 'if-none-match': v.etag }).status).toBe(304);
    expect(plan({ 'if-none-match': `"other", W/${v.etag}` }).status).toBe(304);
    expect(plan({ 'if-none-match': '"other"' }).status).toBe(200);
    expect(plan({ 'if-modified-since': v.lastModified }).status).toBe(304);
    expect(plan({ 'if-modified-since': new Date(1_600_000_000_000).toUTCString() }).status).toBe(200);
    expect(plan({ range: 'bytes=0-9', 'if-range': v.etag }).status).toBe(206);
    expect(plan({ range: 'bytes=0-9', 'if-range': '"stale"' }).status).toBe(200);
    expect(plan({ range: 'bytes=0-9', 'if-range': `W/${v.etag}` }).status).toBe(200);
    expect(plan({ range: 'bytes=0-9', 'if-range': v.lastModified }).status).toBe(206);
  });

  it('never plans bytes outside the file and always states the right lengths (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1e7 }),
        fc.oneof(
          fc.tuple(fc.option(fc.nat(2e7)), fc.option(fc.nat(2e7))).map(([a, b]) => `bytes=${a ?? ''}-${b ?? ''}`),
          fc.array(fc.tuple(fc.nat(2e7), fc.nat(2e7)), { minLength: 1, maxLength: 4 }).map((rs) => `bytes=${rs.map(([a, b]) => `${a}-${b}`).join(',')}`),
          fc.string(),
        ),
        (size, range) => {
          const p = planResponse({ size, validators: v }, { range });
          if (p.status === 416) {
            expect(p.headers['Content-Range']).toBe(`bytes */${size}`);
            return;
          }
          if (p.status !== 200 && p.status !== 206) throw new Error(`unexpected ${p.status}`);
          expect(p.start).toBeGreaterThanOrEqual(0);
          expect(p.end).toBeLessThan(size);
          expect(Number(p.headers['Content-Length'])).toBe(p.end - p.start + 1);
          if (p.status === 206) expect(p.headers['Content-Range']).toBe(`bytes ${p.start}-${p.end}/${size}`);
          else expect(p.start === 0 && p.end === size - 1).toBe(true);
        },
      ),
    );
  });
});

describe('playlist rewriting', () => {
  const TOKEN = 'v1.kid.payload.mac';
  const render = (kind: 'm3u8' | 'mpd' | 'vtt', text: string) => new PlaylistCache().render(kind, 'k', async () => text, TOKEN);

  it('tokenises the image reference of every thumbnail cue (before its #xywh fragment), and no other cue text', async () => {
    const index = [
      'WEBVTT',
      '',
      '00:00:00.000 --> 00:00:02.000',
      'thumbs_0_000.jpg#xywh=0,0,160,90',
      '',
      'tile-2',
      '00:00:02.000 --> 00:00:04.000',
      'sheets/thumbs_0_000.jpg?v=2#xywh=160,0,160,90',
      '',
      '00:00:04.000 --> 00:00:06.000',
      'https://cdn.example/elsewhere.jpg#xywh=0,0,1,1',
      '',
      'NOTE thumbs_9.jpg is not a cue',
      '',
      '00:00:06.000 --> 00:00:08.000',
      'a subtitle, not a picture.jpg',
      '',
    ].join('\r\n');
    const lines = (await render('vtt', index)).split('\r\n');
    expect(lines[3]).toBe('thumbs_0_000.jpg?token=v1.kid.payload.mac#xywh=0,0,160,90');
    expect(lines[5]).toBe('tile-2'); // a cue identifier, before the timing line
    expect(lines[7]).toBe('sheets/thumbs_0_000.jpg?v=2&token=v1.kid.payload.mac#xywh=160,0,160,90');
    expect(lines[10]).toBe('https://cdn.example/elsewhere.jpg#xywh=0,0,1,1'); // never leaves for another host
    expect(lines[12]).toBe('NOTE thumbs_9.jpg is not a cue');
    expect(lines[15]).toBe('a subtitle, not a picture.jpg');
    await expect(render('vtt', 'not webvtt\n')).rejects.toMatchObject({ code: 'vtt_invalid' });
  });

  it('tokenises every URI line and URI attribute of an HLS playlist, and nothing else', async () => {
    const master = [
      '#EXTM3U',
      '#EXT-X-VERSION:7',
      '#EXT-X-SESSION-KEY:METHOD=AES-128,URI="keys/session.key"',
      '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en, main",URI="audio/en.m3u8"',
      '#EXT-X-STREAM-INF:BANDWIDTH=400000,CODECS="avc1.4d401e,mp4a.40.2",AUDIO="aud"',
      '240p.m3u8',
      '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=80000,URI="240p_iframes.m3u8"',
      '#EXT-X-STREAM-INF:BANDWIDTH=800000',
      '360p.m3u8?v=2',
      '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="s",NAME="x",URI="https://cdn.example/subs.m3u8"',
      '# a comment with URI="not-this.m3u8"',
      '',
    ].join('\r\n');
    const out = await render('m3u8', master);
    const lines = out.split('\r\n');
    expect(lines).toContain('#EXT-X-SESSION-KEY:METHOD=AES-128,URI="keys/session.key?token=v1.kid.payload.mac"');
    expect(lines).toContain('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en, main",URI="audio/en.m3u8?token=v1.kid.payload.mac"');
    expect(lines).toContain('#EXT-X-STREAM-INF:BANDWIDTH=400000,CODECS="avc1.4d401e,mp4a.40.2",AUDIO="aud"');
    expect(lines).toContain('240p.m3u8?token=v1.kid.payload.mac');
    expect(lines).toContain('#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=80000,URI="240p_iframes.m3u8?token=v1.kid.payload.mac"');
    expect(lines).toContain('360p.m3u8?v=2&token=v1.kid.payload.mac');
    expect(lines).toContain('#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="s",NAME="x",URI="https://cdn.example/subs.m3u8"'); // never leaves for another host
    expect(lines).toContain('# a comment with URI="not-this.m3u8"');
    expect(lines).toHaveLength(master.split('\r\n').length);

    const media = ['#EXTM3U', '#EXT-X-MAP:URI="init.mp4"', '#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV=0x1', '#EXTINF:2.0,', 'seg_000.m4s', '#EXT-X-ENDLIST'].join('\n');
    expect((await render('m3u8', media)).split('\n')).toEqual([
      '#EXTM3U', `#EXT-X-MAP:URI="init.mp4?token=${TOKEN}"`, `#EXT-X-KEY:METHOD=AES-128,URI="k.key?token=${TOKEN}",IV=0x1`, '#EXTINF:2.0,', `seg_000.m4s?token=${TOKEN}`, '#EXT-X-ENDLIST',
    ]);
  });

  it('tokenises the URIs of a DASH manifest parsed as XML', async () => {
    const mpd = `<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S">
  <Period><BaseURL>media/</BaseURL>
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      <Representation id="0" bandwidth="400000"/>
    </AdaptationSet>
    <AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000">
      <SegmentList><Initialization sourceURL="a-init.mp4"/><SegmentURL media="a-1.m4s"/><SegmentURL media="https://other.example/a-2.m4s"/></SegmentList>
    </Representation></AdaptationSet>
  </Period>
</MPD>`;
    const out = await render('mpd', mpd);
    expect(out).toContain(`<BaseURL>media/?token=${TOKEN}</BaseURL>`);
    expect(out).toContain(`initialization="init-$RepresentationID$.m4s?token=${TOKEN}"`);
    expect(out).toContain(`media="chunk-$RepresentationID$-$Number%05d$.m4s?token=${TOKEN}"`);
    expect(out).toContain(`sourceURL="a-init.mp4?token=${TOKEN}"`);
    expect(out).toContain(`media="a-1.m4s?token=${TOKEN}"`);
    expect(out).toContain('media="https://other.example/a-2.m4s"');
    expect(out).toContain('mediaPresentationDuration="PT4S"');
  });

  it('refuses to serve a playlist that is not one', async () => {
    await expect(render('m3u8', 'hello')).rejects.toMatchObject({ code: 'playlist_invalid' });
    await expect(render('mpd', '<MPD><unclosed></MPD>')).rejects.toMatchObject({ code: 'manifest_invalid' });
    await expect(render('mpd', '<html/>')).rejects.toMatchObject({ code: 'manifest_invalid' });
  });

  it('parses once per file version and joins per token', async () => {
    const cache = new PlaylistCache();
    let loads = 0;
    const load = async () => (loads++, '#EXTM3U\nseg.ts\n');
    expect(await cache.render('m3u8', 'v1', load, 'A.b')).toBe('#EXTM3U\nseg.ts?token=A.b\n');
    expect(await cache.render('m3u8', 'v1', load, 'C.d')).toBe('#EXTM3U\nseg.ts?token=C.d\n');
    expect(loads).toBe(1);
  });
});
