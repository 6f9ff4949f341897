/**
 * The media edge contract between nginx and the stream function. nginx proxies
 * every media request to the function with `X-Media-Edge: accel`; the function
 * decides (token, scope, path, audit) and answers a granted file with
 * `X-Accel-Redirect: /_pulsevault_edge/<range|whole>/<videoId>/<real path>`,
 * which nginx serves from the read-only media volume with sendfile. The
 * function has already planned the response with its own validators
 * (shared/delivery/media-response.ts): it answers 304 and 416 itself and tells
 * nginx whether to honour the Range header (`range`, a planned 206) or to send
 * the whole file (`whole`: no range, a malformed or multiple one, a failed
 * If-Range). So ETag, If-Range and 304 mean the same with and without the
 * edge. A request without the header (straight to the function's port) is
 * served by the function itself.
 *
 * A client that sets the header on a direct request gets an empty body and an
 * internal path it already knows: nothing is granted that the token did not.
 */
import type { IncomingMessage } from 'node:http';

export const EDGE_REQUEST_HEADER = 'x-media-edge';
export const EDGE_REQUEST_VALUE = 'accel';
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

/** Where nginx finds a granted file: `relativePath` is its real path inside the video's directory. */
export function edgeRedirect(send: EdgeSend, videoId: string, relativePath: string): string {
  return `${EDGE_INTERNAL_PREFIX}${send}/${videoId}/${relativePath}`;
}
