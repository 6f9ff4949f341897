/**
 * The local gateway: what the OpenFaaS gateway plus the ingress do in a cluster,
 * as one Node server for `npm start` and the tests.
 *
 * - `/function/<name>/rest` → the function, prefix stripped (as the OpenFaaS gateway);
 * - the spec's public API (services/gateway/routes.ts) → the function, path unchanged (as the ingress);
 * - `GET /` health of every function, `GET /metrics` all functions' metrics,
 *   `GET /system/functions` the deployed functions (as the OpenFaaS API, for connectors).
 *
 * Bodies are piped both ways, never buffered.
 */
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { isEdgeOnlyHeader } from '../../shared/delivery/edge.js';
import { toHttpError, MethodNotAllowedError, NotFoundError, ServiceUnavailableError } from '../../shared/platform/errors.js';
import { discardRequestBody, sendJson, requestPath } from '../../shared/platform/http.js';
import type { Logger } from '../../shared/platform/log.js';
import { matchPublicRoute, parseFunctionPath } from './routes.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization']);

export interface GatewayBackend {
  /** Base URL (http://127.0.0.1:port) of a ready replica of the function, round-robin; undefined when none is ready. */
  pick(fn: string): string | undefined;
  has(fn: string): boolean;
  health(): Promise<unknown>;
  metrics(): Promise<string>;
  systemFunctions(): unknown;
}

/** Extra local-only routes (e.g. the web console); return true when handled. */
export type ExtraRoute = (req: IncomingMessage, res: ServerResponse) => Promise<boolean> | boolean;

export function createGateway(backend: GatewayBackend, log: Logger, extra: ExtraRoute[] = []): Server {
  const agent = new Agent({ keepAlive: true, maxSockets: 512 });

  function forward(req: IncomingMessage, res: ServerResponse, fn: string, path: string): void {
    const target = backend.pick(fn);
    if (!target) throw new ServiceUnavailableError(`function ${fn} has no ready replica`, 'function_unavailable');
    const headers: Record<string, string | string[]> = {};
    // Edge-only headers (shared/delivery/edge.ts) come from the media edge, never from a caller of the gateway.
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k) && !isEdgeOnlyHeader(k)) headers[k] = v;
    // As the OpenFaaS gateway: keep the caller's forwarded headers, add them when absent.
    const remote = req.socket.remoteAddress ?? '';
    headers['x-forwarded-for'] ??= `${remote.includes(':') ? `[${remote}]` : remote}:${req.socket.remotePort ?? 0}`;
    headers['x-forwarded-host'] ??= req.headers.host ?? '';
    headers['x-call-id'] = randomUUID();
    headers['x-start-time'] = String(Date.now() * 1e6);

    const upstream = httpRequest(`${target}${path}`, { method: req.method, headers, agent });
    let answer: IncomingMessage | undefined;
    upstream.on('response', (up) => {
      answer = up;
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      up.pipe(res);
      up.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => {
      // The function answered and then stopped reading what we still had to send (an early refusal):
      // its answer is whole, the client gets it; only the rest of the client's body is dropped.
      if (answer?.complete) return void req.unpipe(upstream);
      log.warn({ fn, err: err.message }, 'upstream request failed');
      if (!res.headersSent) {
        sendJson(res, 502, { error: 'bad_gateway', message: `function ${fn} did not answer` });
      } else {
        res.destroy();
      }
    });
    // Answered before the client's body was all sent on: drop the rest (bounded), so the client's
    // connection — a pooled one of the media edge — carries its next request.
    res.once('finish', () => {
      req.unpipe(upstream);
      discardRequestBody(req);
    });
    // A client that goes away aborts the upstream request too (frees the function's file descriptors).
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = requestPath(req);
    const method = req.method ?? 'GET';

    if (path === '/' && method === 'GET') return sendJson(res, 200, await backend.health());
    if (path === '/metrics' && method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      return void res.end(await backend.metrics());
    }
    if (path === '/system/functions' && method === 'GET') return sendJson(res, 200, backend.systemFunctions());

    const fnPath = parseFunctionPath(url);
    if (fnPath) {
      if (!backend.has(fnPath.name)) throw new NotFoundError(`no function named ${fnPath.name}`);
      return forward(req, res, fnPath.name, fnPath.path);
    }

    const match = matchPublicRoute(method, path);
    if (match) {
      if (!match.methodAllowed) throw new MethodNotAllowedError(match.route.methods);
      return forward(req, res, match.route.function, url);
    }

    for (const handler of extra) if (await handler(req, res)) return;
    throw new NotFoundError('no such route');
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      const e = toHttpError(err);
      if (!e.expected) log.error({ err }, 'gateway error');
      if (res.headersSent) return void res.destroy();
      sendJson(res, e.status, { error: e.code, message: e.message }, e.headers);
      // The request body was not read: drop it (bounded) so the connection can carry the next request.
      res.once('finish', () => discardRequestBody(req));
    });
  });
  server.requestTimeout = 0; // uploads and transcodes are long; the functions own their timeouts
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.on('close', () => agent.destroy());
  return server;
}
