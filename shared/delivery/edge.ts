/**
 * The media edge contract between nginx and the stream function. nginx sends
 * the bytes; the function decides (token, scope, path, audit), in one of two ways.
 *
 * Grants (the hot path). A player fetches many files under one token: every
 * segment and init segment of a rendition directory. For a request whose path
 * matches EDGE_FILE_PATTERN, nginx asks the function once per token, grant
 * unit and Origin (`X-Media-Edge: grant`, auth_request): does this token grant
 * this unit — a rendition directory (`hls/240p/`) or one top-level file
 * (`original.mp4`)? The function verifies the token, audits the grant (fail
 * closed: no entry, no grant) and answers 200 with `X-Accel-Expires` = the
 * token's remaining life; nginx caches that answer under the token and unit
 * and sends every file of the unit itself (sendfile, its own Range, ETag,
 * If-Range and 304 handling), with the function's headers. A token for one
 * file inside a directory grants that request alone (audited, not cached).
 * Anything else —
 * a refusal, a missing file, an unsatisfiable range, a symlink — is handed to
 * the function as a whole request, which answers as it always does. So an
 * access entry stands for a grant of a unit for at most the token's lifetime,
 * and nginx's access log (path, status, bytes; no token, no address) has each
 * file sent.
 *
 * Per request (`X-Media-Edge: accel`): playlists (rewritten per token) and
 * paths outside the pattern. The function decides and answers a granted file
 * with `X-Accel-Redirect: /_pulsevault_edge/<range|whole>/<videoId>/<real path>`,
 * which nginx serves from the read-only media volume. The function has already
 * planned the response (shared/delivery/media-response.ts): it answers 304 and
 * 416 itself and tells nginx whether to honour the Range header (`range`, a
 * planned 206) or to send the whole file (`whole`).
 *
 * A request without the header (straight to the function's port, or through
 * the OpenFaaS gateway) is served by the function itself. The edge headers are
 * believed only with the edge's key (`X-Media-Edge-Key`, the secret
 * media-edge-key that nginx and the function share): the function's runtime
 * drops every edge header of a request without it (admitEdgeHeaders), the
 * gateway and the ingress strip them, so a client that sends
 * `X-Media-Edge: grant` gets the file (or the refusal) it would get without.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { UUID_PATTERN } from '../platform/ids.js';
import { MEDIA_TYPES, mediaToken, parseGrantUnit, parseUrlMediaPath, type MediaUrl } from './media-path.js';
import { scopeCovers, type TokenClaims, type TokenCodec } from './tokens.js';

export const EDGE_REQUEST_HEADER = 'x-media-edge';
export const EDGE_REQUEST_VALUE = 'accel';
export const EDGE_GRANT_VALUE = 'grant';
/**
 * The token nginx keys its grant cache on (`$arg_token`, as sent): a grant is
 * given only when it is the one token the function reads from the query, so a
 * cached grant can never be found under another string.
 */
export const EDGE_TOKEN_HEADER = 'x-media-edge-token';
/** The file nginx is about to send (its path in the video): a token for that file alone grants this request only. */
export const EDGE_FILE_HEADER = 'x-media-edge-file';
/** The shared secret that proves a request comes from the edge (config.mediaEdgeKey). */
export const EDGE_KEY_HEADER = 'x-media-edge-key';
/** `1`: the edge has its decryption module and sends encrypted files itself (./edge-decrypt.ts). */
export const EDGE_DECRYPTS_HEADER = 'x-media-edge-decrypts';
/** Headers only the edge may send: all share the prefix, so the gateway and the ingress strip them by it. */
export const EDGE_ONLY_HEADERS = [EDGE_REQUEST_HEADER, EDGE_TOKEN_HEADER, EDGE_FILE_HEADER, EDGE_KEY_HEADER, EDGE_DECRYPTS_HEADER] as const;
export const isEdgeOnlyHeader = (name: string) => name.toLowerCase().startsWith(EDGE_REQUEST_HEADER);

/**
 * Keep the edge headers of a request only when it carries the edge's key; the key itself never
 * reaches a handler. Without a configured key nothing is believed (the function sends bytes itself).
 */
export function admitEdgeHeaders(req: IncomingMessage, key: string | null): void {
  const given = req.headers[EDGE_KEY_HEADER];
  const [a, b] = [Buffer.from(typeof given === 'string' ? given : ''), Buffer.from(key ?? '')];
  const proven = key !== null && a.length === b.length && timingSafeEqual(a, b);
  for (const name of Object.keys(req.headers)) if (isEdgeOnlyHeader(name) && (!proven || name === EDGE_KEY_HEADER)) delete req.headers[name];
}

/** nginx's auth_request location (internal) that asks the function for a grant. */
export const EDGE_GRANT_LOCATION = '/_pulsevault_grant';
/** nginx's `internal` locations over VIDEO_DIR: `<prefix>range/` and `<prefix>whole/`. */
export const EDGE_INTERNAL_PREFIX = '/_pulsevault_edge/';
export type EdgeSend = 'range' | 'whole';

/**
 * Headers of the function's answer that nginx must repeat on the file it sends.
 * nginx keeps only a few upstream headers across X-Accel-Redirect (Content-Type,
 * Cache-Control, …); these it re-adds from `$upstream_http_*`.
 */
export const EDGE_REPEATED_HEADERS = [
  'ETag',
  'Access-Control-Allow-Origin',
  'Access-Control-Expose-Headers',
  'Vary',
  'Referrer-Policy',
  'X-Content-Type-Options',
  'Strict-Transport-Security',
] as const;

export function viaEdge(req: IncomingMessage): boolean {
  return req.headers[EDGE_REQUEST_HEADER] === EDGE_REQUEST_VALUE;
}

export function asksForGrant(req: IncomingMessage): boolean {
  return req.headers[EDGE_REQUEST_HEADER] === EDGE_GRANT_VALUE;
}

/**
 * Decide a grant request: how many seconds nginx may reuse the grant of the
 * unit (the token's remaining life), or 0 when the token is for one file inside
 * it and grants this request's file alone. Throws when nothing is granted.
 */
export function grantSecondsFor(req: IncomingMessage, url: MediaUrl, tokens: TokenCodec, nowSeconds = Math.floor(Date.now() / 1000)): number {
  // The query's one token must be the string nginx keys the cache on.
  const token = mediaToken(url);
  if (token === null || token === '' || req.headers[EDGE_TOKEN_HEADER] !== token) throw new Error('not the token nginx keys on');
  const claims = tokens.verifyForVideo(token, url.videoId, nowSeconds);
  const unit = parseGrantUnit(url.rest);
  if (scopeCovers(claims.scope, unit)) return grantSeconds(claims, nowSeconds);
  const file = req.headers[EDGE_FILE_HEADER];
  if (typeof file === 'string' && file.startsWith(unit) && scopeCovers(claims.scope, parseUrlMediaPath(file))) return 0;
  throw new Error('the token grants neither the unit nor the file');
}

/** How long nginx may reuse a grant: until the token expires (0: for this request only). */
export function grantSeconds(claims: TokenClaims, nowSeconds = Math.floor(Date.now() / 1000)): number {
  return Math.max(0, claims.exp - nowSeconds);
}

/** Extensions nginx sends under a grant: media files, never playlists and thumbnail indexes (rewritten per token) or JSON. */
export const EDGE_SENT_TYPES: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(MEDIA_TYPES).filter(([ext]) => !['m3u8', 'mpd', 'vtt', 'json'].includes(ext)),
);

/** The one UUID rule (shared/platform/ids.ts), without its anchors. */
const UUID = UUID_PATTERN.source.slice(1, -1);
/** Directory names without dots can never be reserved names (shared/delivery/media-path.ts). */
const DIRECTORY = '[A-Za-z0-9_-]{1,128}';
/** One dot, lower-case extension, not meta.*: a strict subset of the media path rule. */
const FILE = `(?![Mm][Ee][Tt][Aa]\\.)[A-Za-z0-9_-][A-Za-z0-9_-]{0,100}\\.(?:${Object.keys(EDGE_SENT_TYPES).join('|')})`;

/**
 * Paths nginx may send under a cached grant (PCRE, with named captures for the
 * nginx configuration): every path it matches is a valid, non-playlist media
 * path (test/media-edge-units.test.ts holds it to parseUrlMediaPath); anything
 * else goes to the function per request. `pv_dirs` + `pv_file` is the path;
 * the grant unit is `pv_dirs`, or `pv_file` when that is empty.
 */
export const EDGE_FILE_PATTERN = `^/media/videos/(?<pv_video>${UUID})/(?<pv_dirs>(?:${DIRECTORY}/){0,3})(?<pv_file>${FILE})$`;

/** Where nginx finds a granted file: `relativePath` is its real path inside the video's directory. */
export function edgeRedirect(send: EdgeSend, videoId: string, relativePath: string): string {
  return `${EDGE_INTERNAL_PREFIX}${send}/${videoId}/${relativePath}`;
}
