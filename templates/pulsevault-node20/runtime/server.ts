/**
 * The runtime of our OpenFaaS template. of-watchdog (mode=http) forwards every
 * request to this server on 127.0.0.1:$PORT with the body streamed. Around the
 * function's handler it adds: health, metrics, a request id, the one mapping of
 * errors to JSON, request logging and graceful shutdown.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Config } from '../../../shared/platform/config.js';
import { registerDiskUsageMetrics } from '../../../shared/platform/disk-usage.js';
import { toHttpError } from '../../../shared/platform/errors.js';
import { healthReport } from '../../../shared/platform/health.js';
import type { FunctionSetup, RequestContext } from '../../../shared/platform/handler-contract.js';
import { sendJson, requestPath } from '../../../shared/platform/http.js';
import { continueTrace, formatTraceparent } from '../../../shared/platform/tracing.js';
import type { Logger } from '../../../shared/platform/log.js';
import { httpRequestDuration, initMetrics, metricsContentType, registry } from '../../../shared/platform/metrics.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface RunningFunction {
  server: Server;
  /** Stop accepting, let in-flight requests finish (bounded), run shutdown hooks. */
  shutdown(): Promise<void>;
}

export async function startFunction(name: string, setup: FunctionSetup, config: Config, log: Logger): Promise<RunningFunction> {
  initMetrics(name);
  registerDiskUsageMetrics(config.mediaRoot);
  const duration = httpRequestDuration();
  const hooks: (() => Promise<void> | void)[] = [];
  const handle = await setup({ name, config, log, onShutdown: (hook) => hooks.push(hook) });
  let closing = false;

  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    const callId = req.headers['x-call-id'];
    const requestId = typeof callId === 'string' && REQUEST_ID.test(callId) ? callId : randomUUID();
    // Continue the caller's W3C trace (or start one) so logs, queue jobs and the transcoder join up in Tempo.
    const trace = continueTrace(typeof req.headers.traceparent === 'string' ? req.headers.traceparent : null);
    const ctx: RequestContext = { requestId, traceparent: formatTraceparent(trace), log: log.child({ requestId, traceId: trace.traceId }), route: 'unmatched' };
    res.setHeader('X-Call-Id', requestId);
    res.setHeader('X-PulseVault-Function', name);
    if (closing) res.setHeader('Connection', 'close');
    res.once('close', () => {
      // Draining: a keep-alive socket freed by this response must not hold the shutdown open.
      if (closing) server.closeIdleConnections();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = res.writableFinished ? res.statusCode : 499; // 499: client went away first
      duration.observe({ function: name, method: req.method ?? 'GET', route: ctx.route, status: String(status) }, seconds);
      // Probes and scrapes arrive every few seconds: keep them out of the info log.
      const level = ctx.route.startsWith('/_/') || ctx.route === '/metrics' ? 'debug' : 'info';
      ctx.log[level]({ method: req.method, route: ctx.route, status, ms: Math.round(seconds * 1000) }, 'request');
    });

    const path = requestPath(req);
    if (req.method === 'GET' && (path === '/_/health' || path === '/_/ready')) {
      ctx.route = path;
      return sendJson(res, 200, healthReport(name));
    }
    if (req.method === 'GET' && path === '/metrics' && config.metricsEnabled) {
      ctx.route = '/metrics';
      const body = await registry.metrics();
      res.writeHead(200, { 'Content-Type': metricsContentType });
      return void res.end(body);
    }
    if (req.method === 'GET' && path === '/_/metrics.json' && config.metricsEnabled) {
      ctx.route = '/_/metrics.json';
      return sendJson(res, 200, await registry.getMetricsAsJSON());
    }

    try {
      await handle(req, res, ctx);
    } catch (err) {
      const e = toHttpError(err);
      if (e.expected) ctx.log.debug({ status: e.status, code: e.code }, 'request refused');
      else ctx.log.error({ err }, 'unhandled error');
      if (!res.headersSent) {
        // An unread request body would keep the socket busy; the client gets the error and the connection closes.
        if (!req.complete) res.setHeader('Connection', 'close');
        sendJson(res, e.status, { error: e.code, message: e.message, requestId }, e.headers);
      } else {
        res.destroy();
      }
    }
  });
  server.keepAliveTimeout = 65_000; // longer than the watchdog's/ingress' idle timeout, so they close first
  server.headersTimeout = 66_000;
  server.requestTimeout = 0; // the watchdog owns request timeouts (long tus PATCH bodies, long transcodes)

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });

  let shuttingDown: Promise<void> | null = null;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      closing = true;
      log.info({ timeoutMs: config.shutdownTimeoutMs }, 'shutting down: no new connections, draining in-flight requests');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), config.shutdownTimeoutMs);
      });
      const expired = await Promise.race([closed.then(() => false), timedOut]);
      clearTimeout(timer);
      if (expired) {
        log.warn('shutdown bound reached: closing remaining connections');
        server.closeAllConnections();
      }
      for (const hook of hooks.reverse()) {
        try {
          await hook();
        } catch (err) {
          log.error({ err }, 'shutdown hook failed');
        }
      }
    })());

  return { server, shutdown };
}
