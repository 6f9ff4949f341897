/**
 * Playlist rewriting: every child URI of an HLS playlist or DASH manifest gets
 * the request's `token`, so a player that resolves relative URIs (and drops the
 * parent's query) can still fetch variants, segments, init and key files.
 *
 * - HLS (RFC 8216) is read line by line: URI lines, and the quoted `URI="..."`
 *   attribute of any tag (EXT-X-MAP, -KEY, -MEDIA, -I-FRAME-STREAM-INF, -SESSION-KEY, ...).
 * - DASH is parsed as XML (@xmldom/xmldom, which never fetches external entities):
 *   BaseURL text, SegmentTemplate@media/@initialization/@index,
 *   Initialization/RepresentationIndex@sourceURL, SegmentURL@media/@index.
 * - WebVTT thumbnail indexes (`thumbnails.vtt`): a cue whose payload is one image
 *   reference (`thumbs_0_000.jpg#xywh=0,0,160,90`), so a standard seek-thumbnail
 *   plug-in fetches the sprite sheets with the token; other cue text is left alone.
 *
 * Only same-origin references (relative or absolute paths) are tokenised; URLs with
 * a scheme or `//host` keep their form so a token never leaves for another host.
 * The stream function still checks every fetched URI against the token's scope.
 *
 * Parsing happens once per file version: the rewritten body is kept as a
 * template split at the token positions, and each request only joins it.
 */
import { randomBytes } from 'node:crypto';
import { DOMParser, XMLSerializer, type Element } from '@xmldom/xmldom';
import { AppError } from '../platform/errors.js';
import type { PlaylistKind } from './media-path.js';

type AddToken = (uri: string) => string;

function isSameOrigin(uri: string): boolean {
  return uri !== '' && !uri.startsWith('//') && !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(uri);
}

function withQueryParam(uri: string, param: string): string {
  if (!isSameOrigin(uri)) return uri;
  const hash = uri.indexOf('#');
  const [base, fragment] = hash === -1 ? [uri, ''] : [uri.slice(0, hash), uri.slice(hash)];
  return `${base}${base.includes('?') ? '&' : '?'}${param}${fragment}`;
}

/** Rewrite the quoted URI attribute of an HLS attribute list (RFC 8216 §4.2), leaving the rest byte for byte. */
function rewriteAttributeList(list: string, addToken: AddToken): string {
  let out = '';
  let i = 0;
  while (i < list.length) {
    const eq = list.indexOf('=', i);
    if (eq === -1) return out + list.slice(i);
    const name = list.slice(i, eq).trim();
    out += list.slice(i, eq + 1);
    i = eq + 1;
    if (list[i] === '"') {
      const close = list.indexOf('"', i + 1);
      if (close === -1) return out + list.slice(i);
      const value = list.slice(i + 1, close);
      out += `"${name === 'URI' ? addToken(value) : value}"`;
      i = close + 1;
    }
    const comma = list.indexOf(',', i);
    const stop = comma === -1 ? list.length : comma + 1;
    out += list.slice(i, stop);
    i = stop;
  }
  return out;
}

export function rewriteM3u8(text: string, addToken: AddToken): string {
  const lines = text.split('\n');
  if (!lines[0]?.replace(/^\uFEFF/, '').startsWith('#EXTM3U')) throw new AppError(500, 'playlist_invalid', 'playlist is not an M3U8 file');
  return lines
    .map((line) => {
      const cr = line.endsWith('\r') ? '\r' : '';
      const body = cr ? line.slice(0, -1) : line;
      if (body.startsWith('#EXT')) {
        const colon = body.indexOf(':');
        return colon === -1 || !body.includes('URI="') ? line : body.slice(0, colon + 1) + rewriteAttributeList(body.slice(colon + 1), addToken) + cr;
      }
      if (body.startsWith('#') || body.trim() === '') return line;
      return addToken(body.trim()) + cr;
    })
    .join('\n');
}

const DASH_URI_ATTRIBUTES: Record<string, readonly string[]> = {
  SegmentTemplate: ['media', 'initialization', 'index'],
  Initialization: ['sourceURL'],
  RepresentationIndex: ['sourceURL'],
  SegmentURL: ['media', 'index'],
};

export function rewriteMpd(text: string, addToken: AddToken): string {
  let doc;
  try {
    doc = new DOMParser({ onError: (level, message) => { if (level !== 'warning') throw new Error(message); } }).parseFromString(text, 'application/xml');
  } catch {
    throw new AppError(500, 'manifest_invalid', 'manifest is not well-formed XML');
  }
  if (doc.documentElement?.localName !== 'MPD') throw new AppError(500, 'manifest_invalid', 'manifest is not a DASH MPD');
  for (const [tag, attributes] of Object.entries(DASH_URI_ATTRIBUTES)) {
    for (const el of Array.from(doc.getElementsByTagNameNS('*', tag)) as Element[]) {
      for (const attr of attributes) {
        const value = el.getAttribute(attr);
        if (value) el.setAttribute(attr, addToken(value));
      }
    }
  }
  for (const el of Array.from(doc.getElementsByTagNameNS('*', 'BaseURL')) as Element[]) {
    const uri = (el.textContent ?? '').trim();
    if (uri) el.textContent = addToken(uri);
  }
  return new XMLSerializer().serializeToString(doc);
}

/** A cue payload that is one image reference, with or without a media fragment (`#xywh=`). */
const IMAGE_REFERENCE = /^[^\s#?]+\.(?:jpe?g|png|webp)(?:\?[^\s#]*)?(?:#\S*)?$/i;

export function rewriteVtt(text: string, addToken: AddToken): string {
  const lines = text.split('\n');
  if (!/^(?:\uFEFF)?WEBVTT(?:[ \t]|\r?$)/.test(lines[0] ?? '')) throw new AppError(500, 'vtt_invalid', 'thumbnail index is not a WebVTT file');
  let inCue = false;
  return lines
    .map((line) => {
      const cr = line.endsWith('\r') ? '\r' : '';
      const body = cr ? line.slice(0, -1) : line;
      if (body.trim() === '') {
        inCue = false;
        return line;
      }
      if (body.includes('-->')) {
        inCue = true;
        return line;
      }
      return inCue && IMAGE_REFERENCE.test(body.trim()) ? addToken(body.trim()) + cr : line;
    })
    .join('\n');
}

const REWRITERS: Record<PlaylistKind, (text: string, addToken: AddToken) => string> = { m3u8: rewriteM3u8, mpd: rewriteMpd, vtt: rewriteVtt };

/**
 * Rewritten playlists as templates, keyed by file identity (path + ETag), so
 * each request costs a join instead of a parse. Bounded; oldest entry evicted.
 */
export class PlaylistCache {
  private readonly templates = new Map<string, string[]>();

  constructor(private readonly maxEntries = 512) {}

  async render(kind: PlaylistKind, key: string, load: () => Promise<string>, token: string): Promise<string> {
    let parts = this.templates.get(key);
    if (!parts) {
      const text = await load();
      let marker: string;
      do marker = `PVTOKEN${randomBytes(12).toString('hex')}`;
      while (text.includes(marker));
      parts = REWRITERS[kind](text, (uri) => withQueryParam(uri, `token=${marker}`)).split(marker);
      if (this.templates.size >= this.maxEntries) this.templates.delete(this.templates.keys().next().value!);
      this.templates.set(key, parts);
    }
    return parts.join(encodeURIComponent(token));
  }
}
