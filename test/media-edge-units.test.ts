/**
 * The media edge's fast path (shared/delivery/edge.ts): every path nginx may
 * send under a cached grant must be a media path the function itself would
 * serve, and its grant unit one the function grants by the same rule.
 */
import { describe, expect, it } from 'vitest';
import type { IncomingMessage } from 'node:http';
import { EDGE_FILE_HEADER, EDGE_FILE_PATTERN, EDGE_SENT_TYPES, EDGE_TOKEN_HEADER, grantSeconds, grantSecondsFor } from '../shared/delivery/edge.js';
import { parseGrantUnit, parseMediaUrl, parseUrlMediaPath, playlistKind } from '../shared/delivery/media-path.js';
import { createTokenCodec, scopeCovers } from '../shared/delivery/tokens.js';

const VIDEO = '0b7e4a52-6f1d-4c3a-9d2e-8f5a1b2c3d4e';
// nginx's PCRE and JavaScript agree on this subset: classes, groups, bounded repeats, lookahead, named groups.
const pattern = new RegExp(EDGE_FILE_PATTERN);

function fastPath(mediaPath: string): { path: string; unit: string } | null {
  const m = pattern.exec(`/media/videos/${VIDEO}/${mediaPath}`);
  if (!m) return null;
  const { pv_dirs: dirs, pv_file: file } = m.groups!;
  return { path: `${dirs}${file}`, unit: dirs || file! };
}

describe('the paths nginx sends under a grant', () => {
  it('include the files of renditions and top-level originals, posters and sprite sheets', () => {
    for (const p of ['hls/240p/seg_00001.m4s', 'hls/240p_init.mp4', 'original.mp4', 'poster.jpg', 'hls/thumbs_0_000.jpg', 'preview/a/b/c.ts']) {
      expect(fastPath(p), p).not.toBeNull();
    }
    expect(fastPath('hls/240p/seg_00001.m4s')!.unit).toBe('hls/240p/');
    expect(fastPath('original.mp4')!.unit).toBe('original.mp4');
  });

  it('leave to the function playlists and thumbnail indexes (rewritten per token), reserved names, odd spellings and depth', () => {
    const refused = [
      'hls/master.m3u8', 'dash/manifest.mpd', 'hls/thumbnails.vtt', 'meta.json', 'META.json', 'Meta.mp4', 'x.json', 'hls/.hidden.m4s', 'hls/a.tmp.m4s',
      'hls/a.part', 'hls/SEG.M4S', 'a/b/c/d/e.m4s', 'hls/%2e%2e/x.m4s', 'hls//x.m4s', 'hls/../x.m4s', 'hls/x.m4s/', 'x', 'hls/x.exe',
      `${'a'.repeat(129)}/x.m4s`, `hls/${'a'.repeat(102)}.m4s`, 'dir.with.dots/x.m4s',
    ];
    for (const p of refused) expect(fastPath(p), p).toBeNull();
  });

  it('are, for any string, media paths the function serves, in a unit it grants under the same scopes', () => {
    const alphabet = 'aZ09._-/%mM.tj';
    const exts = Object.keys(EDGE_SENT_TYPES);
    let matched = 0;
    for (let i = 0; i < 20_000; i++) {
      let s = '';
      const length = 1 + Math.floor(Math.random() * 24);
      for (let j = 0; j < length; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
      if (Math.random() < 0.7) s += `.${exts[Math.floor(Math.random() * exts.length)]}`;
      const fast = fastPath(s);
      if (!fast) continue;
      matched += 1;
      expect(parseUrlMediaPath(s), s).toBe(fast.path);
      expect(playlistKind(s), s).toBeNull();
      expect(parseGrantUnit(fast.unit), s).toBe(fast.unit);
      // Whatever scope grants the unit grants the file (the function checks the unit, nginx sends the file).
      for (const scope of [fast.unit, `${fast.unit.split('/')[0]}/`, fast.path]) if (scopeCovers(scope, fast.unit)) expect(scopeCovers(scope, fast.path), `${scope} ${s}`).toBe(true);
    }
    expect(matched).toBeGreaterThan(100);
  });
});

describe('grant units the function accepts', () => {
  it('are directories of 1–3 names or one top-level media file', () => {
    for (const ok of ['hls/', 'hls/240p/', 'a/b/c/', 'original.mp4']) expect(parseGrantUnit(ok)).toBe(ok);
    for (const bad of ['', '/', 'a/b/c/d/', 'hls/240p/seg.m4s', 'meta.json', '.x/', 'a.tmp/', 'hls/%2e%2e/', 'hls']) expect(() => parseGrantUnit(bad), bad).toThrow();
  });

  it('are kept until the token expires, never longer', () => {
    expect(grantSeconds({ videoId: VIDEO, exp: 1_000, scope: 'hls/' }, 900)).toBe(100);
    expect(grantSeconds({ videoId: VIDEO, exp: 1_000, scope: 'hls/' }, 1_010)).toBe(0);
  });
});

describe('a grant request', () => {
  const codec = createTokenCodec({ secret: 'unit-test-secret-unit-test-secret', maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
  const NOW = 1_800_000_000;
  const token = (scope: string, videoId = VIDEO) => codec.sign({ videoId, exp: NOW + 100, scope });
  /** As nginx sends it: the unit in the path, the query as the client sent it, the key's token and the file in headers. */
  const ask = (unit: string, query: string, keyToken: string | null, file?: string) => {
    const url = parseMediaUrl(`/media/videos/${VIDEO}/${unit}?${query}`);
    const headers: Record<string, string> = {};
    if (keyToken !== null) headers[EDGE_TOKEN_HEADER] = keyToken;
    if (file) headers[EDGE_FILE_HEADER] = file;
    return () => grantSecondsFor({ headers } as IncomingMessage, url, codec, NOW);
  };

  it("grants the token's unit for its remaining life", () => {
    const t = token('hls/');
    expect(ask('hls/240p/', `token=${t}`, t, 'hls/240p/a.m4s')()).toBe(100);
    expect(ask('original.mp4', `token=${token('original.mp4')}`, token('original.mp4'))()).toBe(100);
  });

  it('grants a token for one file inside the unit for this request only', () => {
    const t = token('hls/240p/a.m4s');
    expect(ask('hls/240p/', `token=${t}`, t, 'hls/240p/a.m4s')()).toBe(0);
    expect(ask('hls/240p/', `token=${t}`, t, 'hls/240p/b.m4s')).toThrow();
    // The file must lie in the unit asked about.
    expect(ask('dash/', `token=${t}`, t, 'hls/240p/a.m4s')).toThrow();
  });

  it('refuses unless the query holds exactly the token nginx keys the cache on', () => {
    const t = token('hls/');
    expect(ask('hls/', `token=${t}`, null)).toThrow();
    expect(ask('hls/', `token=${t}`, '')).toThrow();
    expect(ask('hls/', `token=${t}`, `${t}x`)).toThrow();
    // nginx's $arg_token is the raw text: an encoded spelling is another string, so no grant is kept under it.
    expect(ask('hls/', `token=${t.replace('.', '%2E')}`, t.replace('.', '%2E'))).toThrow();
    expect(ask('hls/', '', '')).toThrow();
  });

  it("refuses another video's token, a unit outside the scope and a malformed unit", () => {
    const other = token('hls/', '1b7e4a52-6f1d-4c3a-9d2e-8f5a1b2c3d4e');
    expect(ask('hls/', `token=${other}`, other)).toThrow();
    const t = token('hls/');
    expect(ask('dash/', `token=${t}`, t)).toThrow();
    expect(ask('hls/../', `token=${t}`, t)).toThrow();
  });
});
