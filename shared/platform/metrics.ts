/**
 * Prometheus metrics (prom-client). One registry per process; every metric is
 * declared through these helpers so a module imported twice (tests, CLIs) reuses
 * the metric instead of failing on a duplicate registration.
 */
import { createServer, type Server } from 'node:http';
import client from 'prom-client';

export const registry = client.register;

let defaultsCollected = false;

/** Default process metrics, labelled with the function (or service) name. */
export function initMetrics(service: string): void {
  registry.setDefaultLabels({ function: service });
  if (!defaultsCollected) {
    client.collectDefaultMetrics({ register: registry });
    defaultsCollected = true;
  }
}

type Cfg<T extends string> = { name: string; help: string; labelNames?: readonly T[] };

function existing<M>(name: string): M | undefined {
  return registry.getSingleMetric(name) as M | undefined;
}

export function counter<T extends string>(cfg: Cfg<T>): client.Counter<T> {
  return existing<client.Counter<T>>(cfg.name) ?? new client.Counter<T>({ ...cfg, labelNames: cfg.labelNames ?? [] });
}

export function gauge<T extends string>(
  cfg: Cfg<T> & { collect?: (this: client.Gauge<T>) => void | Promise<void> },
): client.Gauge<T> {
  return existing<client.Gauge<T>>(cfg.name) ?? new client.Gauge<T>({ ...cfg, labelNames: cfg.labelNames ?? [] });
}

export function histogram<T extends string>(cfg: Cfg<T> & { buckets?: number[] }): client.Histogram<T> {
  return existing<client.Histogram<T>>(cfg.name) ?? new client.Histogram<T>({ ...cfg, labelNames: cfg.labelNames ?? [] });
}

/** Latency of every HTTP request a function answers (the spec's `http_request_duration_seconds`). */
export function httpRequestDuration(): client.Histogram<'function' | 'method' | 'route' | 'status'> {
  return histogram({
    name: 'http_request_duration_seconds',
    help: 'Duration of HTTP requests answered by a PulseVault function, from first byte in to last byte out.',
    labelNames: ['function', 'method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
  });
}

/**
 * Merge metric snapshots (from `registry.getMetricsAsJSON()`) of several
 * processes into one exposition, keeping each process apart with a `replica`
 * label so gauges are not summed across processes.
 */
export type MetricSnapshot = client.MetricObjectWithValues<client.MetricValue<string>>[];

export async function aggregateMetrics(snapshots: { replica: string; metrics: MetricSnapshot }[]): Promise<string> {
  const labelled = snapshots.map(({ replica, metrics }) =>
    metrics.map((m) => ({ ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.labels, replica } })) })),
  );
  const merged = client.AggregatorRegistry.aggregate(labelled as Parameters<typeof client.AggregatorRegistry.aggregate>[0]);
  return merged.metrics();
}

export const metricsContentType = registry.contentType;

/**
 * `GET /metrics` (and `GET /_/health` when `health` is given) on its own port, for
 * the long-running services (queue connector, audit writer) that have no HTTP
 * server of their own. Returns null without a port.
 */
export function serveMetrics(port: number | null, host: string, health?: () => unknown): Server | null {
  if (!port) return null;
  return createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/_/health' && health) {
      return void Promise.resolve(health()).then((report) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(report)));
    }
    if (req.method === 'GET' && req.url === '/metrics') {
      return void registry.metrics().then((body) => res.writeHead(200, { 'Content-Type': metricsContentType }).end(body));
    }
    // The local stack's aggregate reads this form (see aggregateMetrics).
    if (req.method === 'GET' && req.url === '/_/metrics.json') {
      return void registry.getMetricsAsJSON().then((m) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(m)));
    }
    res.writeHead(404).end();
  }).listen(port, host);
}
