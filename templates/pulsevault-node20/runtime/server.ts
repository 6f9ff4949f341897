/**
 * The runtime of our OpenFaaS template. It serves OpenFaaS's workload contract itself
 * (HTTP on $PORT = 8080, `/_/health`, `/_/ready`, the /tmp/.lock file exec probes read,
 * read/write/exec timeouts, max in-flight, graceful drain) instead of sitting behind
 * of-watchdog, which logs every request URI with its query string (signed tokens).
 * Around the function's handler it adds: metrics, a request id, the one mapping of
 * errors to JSON, request logging (route, never the URI) and graceful shutdown.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../../../shared/platform/config.js';
import { registerDiskUsageMetrics } from '../../../shared/platform/disk-usage.js';
import { admitEdgeHeaders } from '../../../shared/delivery/edge.js';
import { toHttpError } from '../../../shared/platform/errors.js';
import { healthReport } from '../../../shared/platform/health.js';
import type { FunctionSetup, RequestContext } from '../../../shared/platform/handler-contract.js';
import { discardRequestBody, sendJson, requestPath } from '../../../shared/platform/http.js';
import { continueTrace, formatTraceparent } from '../../../shared/platform/tracing.js';
import type { Logger } from '../../../shared/platform/log.js';
import { httpRequestDuration, initMetrics, metricsContentType, registry } from '../../../shared/platform/metrics.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface RunningFunction {
  server: Server;
  /**
   * Report not ready, keep serving for healthcheck_interval (the platform stops routing here),
   * stop accepting, let in-flight requests finish (bounded by the longest request the function
   * allows), run shutdown hooks.
   */
  shutdown(): Promise<void>;
}

/** Where of-watchdog keeps its lock file: faas-netes' exec probe (`functions.httpProbe: false`) reads it. */
export const lockFilePath = () => join(tmpdir(), '.lock');

/** The longest a request may run: exec_timeout and write_timeout, whichever ends it first (0 = unbounded). */
function requestDeadlineMs({ writeTimeoutMs, execTimeoutMs }: Config['workload']): number {
  const set = [writeTimeoutMs, execTimeoutMs].filter((ms) => ms > 0);
  return set.length ? Math.min(...set) : 0;
}

/** How long SIGTERM waits for in-flight requests: as long as the function lets one run, else SHUTDOWN_TIMEOUT_SECONDS. */
export function drainBoundMs(config: Pick<Config, 'workload' | 'shutdownTimeoutMs'>): number {
  return requestDeadlineMs(config.workload) || config.shutdownTimeoutMs;
}

export async function startFunction(name: string, setup: FunctionSetup, config: Config, log: Logger): Promise<RunningFunction> {
  initMetrics(name);
  registerDiskUsageMetrics(config.mediaRoot);
  const duration = httpRequestDuration();
  const hooks: (() => Promise<void> | void)[] = [];
  const handle = await setup({ name, config, log, onShutdown: (hook) => hooks.push(hook) });
  const { maxInflight, readTimeoutMs, healthcheckIntervalMs } = config.workload;
  const deadlineMs = requestDeadlineMs(config.workload);
  /** SIGTERM received: not ready, answers close their connections. */
  let closing = false;
  /** Listener closed: idle keep-alive sockets are closed as soon as they free up. */
  let draining = false;
  let inflight = 0;

  // Checks read_timeout every second (Node's default is every 30 s).
  const server = createServer({ connectionsCheckingInterval: 1_000 }, async (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    const callId = req.headers['x-call-id'];
    const requestId = typeof callId === 'string' && REQUEST_ID.test(callId) ? callId : randomUUID();
    // Continue the caller's W3C trace (or start one) so logs, queue jobs and the transcoder join up in Tempo.
    const trace = continueTrace(typeof req.headers.traceparent === 'string' ? req.headers.traceparent : null);
    const ctx: RequestContext = { requestId, traceparent: formatTraceparent(trace), log: log.child({ requestId, traceId: trace.traceId }), route: 'unmatched' };
    res.setHeader('X-Call-Id', requestId);
    res.setHeader('X-PulseVault-Function', name);
    if (closing) res.setHeader('Connection', 'close');
    // Answered before the body was read (a refusal, ours or tus's): drop the rest, bounded, so the
    // edge's or the gateway's pooled connection gets our answer and can carry its next request.
    res.once('finish', () => discardRequestBody(req));
    res.once('close', () => {
      // Draining: a keep-alive socket freed by this response must not hold the shutdown open.
      if (draining) server.closeIdleConnections();
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
      // Draining: not ready, so the platform takes this replica out of rotation (in-flight requests go on).
      const report = await healthReport(name);
      return closing ? sendJson(res, 503, { ...report, status: 'draining' }) : sendJson(res, 200, report);
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

    if (maxInflight > 0 && inflight >= maxInflight) {
      return sendJson(res, 429, { error: 'too_many_requests', message: `this replica is handling ${maxInflight} requests`, requestId });
    }
    inflight++;
    res.once('close', () => inflight--);
    if (deadlineMs > 0) {
      const deadline = setTimeout(() => {
        ctx.log.warn({ route: ctx.route, timeoutMs: deadlineMs }, 'request exceeded exec_timeout/write_timeout');
        // The handler may still write: swallow its write-after-end instead of crashing the process.
        res.on('error', () => {});
        if (res.headersSent) return void res.destroy();
        res.setHeader('Connection', 'close');
        sendJson(res, 504, { error: 'timeout', message: 'the function did not answer within its timeout', requestId });
      }, deadlineMs);
      res.once('close', () => clearTimeout(deadline));
    }

    // Edge headers steer what the stream function sends and audits: only the edge (its key) may set them.
    admitEdgeHeaders(req, config.mediaEdgeKey);
    try {
      await handle(req, res, ctx);
    } catch (err) {
      const e = toHttpError(err);
      if (e.expected) ctx.log.debug({ status: e.status, code: e.code }, 'request refused');
      else ctx.log.error({ err }, 'unhandled error');
      if (!res.headersSent) {
        sendJson(res, e.status, { error: e.code, message: e.message, requestId }, e.headers);
      } else {
        res.destroy();
      }
    }
  });
  server.keepAliveTimeout = 65_000; // longer than the gateway's/ingress' idle timeout, so they close first
  // read_timeout: the whole request, body included, must arrive within it (408 otherwise). Node only
  // enforces requestTimeout when headersTimeout is not longer than it.
  server.requestTimeout = readTimeoutMs;
  server.headersTimeout = readTimeoutMs > 0 ? Math.min(66_000, readTimeoutMs) : 66_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });

  await writeFile(lockFilePath(), '');

  const drainMs = drainBoundMs(config);
  let shuttingDown: Promise<void> | null = null;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      await rm(lockFilePath(), { force: true });
      closing = true;
      if (healthcheckIntervalMs > 0) {
        log.info({ healthcheckIntervalMs }, 'shutting down: reporting not ready, still serving');
        await sleep(healthcheckIntervalMs);
      }
      log.info({ timeoutMs: drainMs }, 'shutting down: no new connections, draining in-flight requests');
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), drainMs);
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
