/**
 * The web console at `/console/`: the static page (services/console/static) and
 * the browser bundles of tus-js-client, hls.js and dash.js straight from
 * node_modules. A fixed table of files (no path from the URL ever reaches the
 * filesystem), each with its Content-Type, a strong ETag (304 on revalidation),
 * gzip when accepted, and headers that keep signed URLs from leaking: a strict
 * CSP (same-origin only) and `Referrer-Policy: no-referrer`.
 *
 * Mounted by the local gateway (services/devstack) and by the standalone
 * server (./main.ts) that a cluster runs behind the ingress.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { MethodNotAllowedError } from '../../shared/platform/errors.js';
import { requestPath } from '../../shared/platform/http.js';
import type { ExtraRoute } from '../gateway/gateway.js';

export const CONSOLE_PREFIX = '/console/';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/**
 * Same origin only. hls.js runs its demuxer in a worker made from a blob: URL;
 * both players feed the <video> element through MediaSource blob: URLs.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  "connect-src 'self'",
  "worker-src 'self' blob:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Also what a web server in front of exported files must send (see `pulsevault console-export`). */
export const SECURITY_HEADERS = {
  'Content-Security-Policy': CSP,
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
};

/** URL (relative to /console/) → file on disk. */
export function consoleFiles(root: string): Map<string, string> {
  const require = createRequire(path.join(root, 'package.json'));
  const staticDir = path.join(root, 'services/console/static');
  // dashjs exports only its bundles' entry points; the full build (the media player with EME
  // protection, which encrypted renditions need) is the one it resolves to.
  return new Map([
    ['', path.join(staticDir, 'index.html')],
    ['index.html', path.join(staticDir, 'index.html')],
    ['app.js', path.join(staticDir, 'app.js')],
    ['styles.css', path.join(staticDir, 'styles.css')],
    ['vendor/tus.min.js', require.resolve('tus-js-client/dist/tus.min.js')],
    ['vendor/hls.min.js', require.resolve('hls.js/dist/hls.min.js')],
    ['vendor/dash.all.min.js', require.resolve('dashjs')],
  ]);
}

interface Asset {
  mtimeMs: number;
  type: string;
  etag: string;
  body: Buffer;
  gzip: Buffer;
}

export interface ConsoleRouteOptions {
  /** Repository root (where package.json and node_modules are). */
  root: string;
}

export function createConsoleRoute({ root }: ConsoleRouteOptions): ExtraRoute {
  const files = consoleFiles(root);
  const cache = new Map<string, Asset>();

  /** Read once, again only when the file changed (editing the console while the stack runs). */
  async function load(file: string): Promise<Asset> {
    const { mtimeMs } = await stat(file);
    const cached = cache.get(file);
    if (cached?.mtimeMs === mtimeMs) return cached;
    const body = await readFile(file);
    const asset: Asset = {
      mtimeMs,
      type: TYPES[path.extname(file)] ?? 'application/octet-stream',
      etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
      body,
      gzip: gzipSync(body),
    };
    cache.set(file, asset);
    return asset;
  }

  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    const urlPath = requestPath(req);
    if (urlPath === '/console') {
      res.writeHead(308, { Location: CONSOLE_PREFIX, 'Content-Length': 0 });
      res.end();
      return true;
    }
    if (!urlPath.startsWith(CONSOLE_PREFIX)) return false;
    const file = files.get(urlPath.slice(CONSOLE_PREFIX.length));
    if (!file) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError(['GET', 'HEAD']);

    const asset = await load(file);
    const headers: Record<string, string | number> = {
      'Content-Type': asset.type,
      // Revalidate every time: a 304 costs one round trip, a stale app.js costs a confusing bug.
      'Cache-Control': 'no-cache',
      ETag: asset.etag,
      Vary: 'Accept-Encoding',
      ...SECURITY_HEADERS,
    };
    if (String(req.headers['if-none-match'] ?? '').split(/\s*,\s*/).includes(asset.etag)) {
      res.writeHead(304, headers);
      res.end();
      return true;
    }
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = gzip ? asset.gzip : asset.body;
    if (gzip) headers['Content-Encoding'] = 'gzip';
    headers['Content-Length'] = body.length;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}
