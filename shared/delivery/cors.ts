/**
 * CORS for browser players and web apps, from `CORS_ORIGINS` (exact origins, or
 * `*`). No credentials: media URLs carry their token and the API its Bearer
 * header, so cookies are never needed cross-origin.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface CorsPolicy {
  /** Headers to add to an actual response (empty when the origin is not allowed). */
  headers(req: IncomingMessage): Record<string, string>;
  /** Answer an OPTIONS preflight with 204. */
  preflight(req: IncomingMessage, res: ServerResponse): void;
}

export interface CorsOptions {
  origins: readonly string[];
  methods: readonly string[];
  allowHeaders: readonly string[];
  exposeHeaders?: readonly string[];
}

export function createCors({ origins, methods, allowHeaders, exposeHeaders = [] }: CorsOptions): CorsPolicy {
  const any = origins.includes('*');
  const allowed = new Set(origins);
  const allowOrigin = (req: IncomingMessage): string | null => {
    const origin = req.headers.origin;
    if (typeof origin !== 'string') return null;
    return any ? '*' : allowed.has(origin) ? origin : null;
  };
  return {
    headers(req) {
      const origin = allowOrigin(req);
      const out: Record<string, string> = any ? {} : { Vary: 'Origin' };
      if (!origin) return out;
      out['Access-Control-Allow-Origin'] = origin;
      if (exposeHeaders.length) out['Access-Control-Expose-Headers'] = exposeHeaders.join(', ');
      return out;
    },
    preflight(req, res) {
      const origin = allowOrigin(req);
      res.writeHead(204, {
        ...(any ? {} : { Vary: 'Origin' }),
        ...(origin
          ? {
              'Access-Control-Allow-Origin': origin,
              'Access-Control-Allow-Methods': methods.join(', '),
              'Access-Control-Allow-Headers': allowHeaders.join(', '),
              'Access-Control-Max-Age': '600',
            }
          : {}),
        'Content-Length': '0',
      });
      res.end();
    },
  };
}
