/**
 * Metrics and monitoring: the one list of metric names the code exports (read
 * from its declarations), the alert rules (promtool), the dashboard and the
 * scrape config agree with it, and the media volume gauges are real.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import client from 'prom-client';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerDiskUsageMetrics } from '../shared/platform/disk-usage.js';
import { httpRequestDuration, registry } from '../shared/platform/metrics.js';
import { readStack } from '../shared/platform/openfaas-stack.js';
import { startStack, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const MONITORING = 'k8s/monitoring';

interface Declared {
  type: 'counter' | 'gauge' | 'histogram' | 'summary';
  name: string;
  help: string;
  file: string;
}

function sources(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/**
 * Every metric the code declares: `counter({ name: '...', help: '...' })` (shared/platform/metrics.ts
 * helpers) or `new client.Counter({ ... })`, in all code that runs in production.
 */
function declaredMetrics(): Declared[] {
  const re = /\b(?:(counter|gauge|histogram|summary)(?:<[^>]*>)?|new\s+(?:client\.)?(Counter|Gauge|Histogram|Summary)(?:<[^>]*>)?)\(\s*\{\s*name:\s*(['"`])([^'"`]+)\3\s*,\s*help:\s*(['"`])((?:(?!\5).)*)\5/gs;
  return ['shared', 'functions', 'services', 'templates', 'scripts'].flatMap(sources).flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(re)].map((m) => ({ type: (m[1] ?? m[2]!.toLowerCase()) as Declared['type'], name: m[4]!, help: m[6]!, file })),
  );
}

/** prom-client's default process metrics (initMetrics collects them in every process). */
function defaultMetricNames(): string[] {
  const r = new client.Registry();
  client.collectDefaultMetrics({ register: r });
  return r.getMetricsAsArray().map((m) => m.name);
}

/** Series that come from outside our code, and where they come from. */
const EXTERNAL: Record<string, string> = {
  up: 'Prometheus itself, per scrape target',
  redis_up: 'the redis_exporter sidecar in k8s/redis.yaml',
};

const declared = declaredMetrics();
const exported = new Set([...declared.map((d) => d.name), ...defaultMetricNames(), ...Object.keys(EXTERNAL)]);
const histograms = new Set(declared.filter((d) => d.type === 'histogram').map((d) => d.name));
const pending = readFileSync(path.join(MONITORING, 'pending-metrics.txt'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

/** Metric names a PromQL expression selects (Prometheus' own grammar), histogram series folded to their metric. */
function metricNames(expr: string): string[] {
  const tree = parser.parse(expr);
  const names: string[] = [];
  let error = false;
  tree.iterate({
    enter(node) {
      if (node.type.isError) error = true;
      if (node.name === 'VectorSelector') {
        const id = node.node.getChild('Identifier');
        if (id) names.push(expr.slice(id.from, id.to));
      }
    },
  });
  expect(error, `PromQL does not parse: ${expr}`).toBe(false);
  return names.map((n) => {
    const base = n.replace(/_(bucket|sum|count)$/, '');
    return base !== n && (histograms.has(base) || pending.includes(base)) ? base : n;
  });
}

const rules = parseYaml(readFileSync(path.join(MONITORING, 'alert-rules.yml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
const alertExprs = rules.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
const dashboard = JSON.parse(readFileSync(path.join(MONITORING, 'grafana-dashboard.json'), 'utf8')) as Obj;
/** Grafana's own variables are not PromQL: give them values Prometheus would see. */
const grafanaToPromQL = (expr: string) => expr.replace(/\$__(rate_interval|interval|range)/g, '5m').replace(/\$(\w+)/g, '.*');
const dashboardExprs = [
  ...(dashboard.panels as Obj[]).flatMap((p) => ((p.targets ?? []) as Obj[]).map((t) => ({ where: `panel "${p.title}"`, expr: grafanaToPromQL(t.expr as string) }))),
  ...(dashboard.templating.list as Obj[])
    .filter((v) => v.type === 'query')
    .map((v) => ({ where: `variable ${v.name}`, expr: /^label_values\(([^,]+),/.exec(v.definition as string)![1]! })),
];

describe('exported metrics', () => {
  it('are found where the runtime registers them (the declaration scan sees what the registry holds)', () => {
    httpRequestDuration();
    registerDiskUsageMetrics('.');
    const registered = registry.getMetricsAsArray().map((m) => m.name);
    for (const name of registered) expect(exported, name).toContain(name);
    expect(declared.map((d) => d.name)).toEqual(expect.arrayContaining(['http_request_duration_seconds', 'pulsevault_media_volume_size_bytes', 'pulsevault_media_volume_available_bytes']));
  });

  it('follow Prometheus naming conventions and each has HELP text', () => {
    const seen = new Map<string, string>();
    for (const d of declared) {
      const where = `${d.name} (${d.file})`;
      expect(d.name, where).toMatch(/^[a-z][a-z0-9_]*$/);
      // The spec fixes http_request_duration_seconds; everything else is namespaced.
      if (d.name !== 'http_request_duration_seconds') expect(d.name, where).toMatch(/^pulsevault_/);
      if (d.type === 'counter') expect(d.name, where).toMatch(/_total$/);
      else expect(d.name, where).not.toMatch(/_total$/);
      if (d.type === 'histogram' || d.type === 'summary') expect(d.name, where).toMatch(/_(seconds|bytes)$/);
      expect(d.help.trim().length, `${where} HELP`).toBeGreaterThan(10);
      // Declared in two places is fine only as the same kind of metric (the helpers reuse it).
      if (seen.has(d.name)) expect(seen.get(d.name), where).toBe(d.type);
      seen.set(d.name, d.type);
    }
  });
});

describe('alert rules and dashboard', () => {
  it('query only metrics the code exports (or that other areas are adding: pending-metrics.txt)', () => {
    const used = new Set<string>();
    for (const { where, expr } of [...alertExprs, ...dashboardExprs]) {
      for (const name of metricNames(expr)) {
        used.add(name);
        expect(exported.has(name) || pending.includes(name), `${where} queries ${name}, which nothing exports`).toBe(true);
      }
    }
    for (const name of pending) {
      expect(exported.has(name), `${name} is exported now: delete it from k8s/monitoring/pending-metrics.txt`).toBe(false);
      expect(used.has(name), `${name} is pending but no query uses it`).toBe(true);
    }
    // The spec's four key metrics are on the dashboard.
    for (const name of ['pulsevault_uploads_total', 'pulsevault_transcodes_total', 'pulsevault_queue_length', 'http_request_duration_seconds']) expect(used, name).toContain(name);
  });

  it('cover every alert the spec asks for, plus audit failures', () => {
    const text = alertExprs.map((a) => a.expr).join('\n');
    expect(text).toMatch(/max\(pulsevault_queue_length\) > 100/);
    expect(text).toMatch(/pulsevault_media_volume_available_bytes \/ pulsevault_media_volume_size_bytes\) > 0\.85/);
    expect(text).toMatch(/status=~"5\.\."[\s\S]*> 0\.05/);
    expect(text).toMatch(/pulsevault_transcodes_total\{status="failure"\}/);
    expect(text).toMatch(/redis_up/);
    expect(text).toMatch(/pulsevault_audit_write_failures_total/);
  });

  function promtool(): string {
    for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
      if (existsSync(path.join(dir, 'promtool'))) return path.join(dir, 'promtool');
    }
    throw new Error("promtool not found: install Debian's prometheus package (.ci/run does)");
  }

  it('pass promtool check rules', () => {
    const out = execFileSync(promtool(), ['check', 'rules', 'alert-rules.yml'], { cwd: MONITORING, encoding: 'utf8' });
    expect(out).toMatch(new RegExp(`SUCCESS: ${alertExprs.length} rules found`));
  });

  it('fire on the data they are written for and stay quiet otherwise (promtool test rules)', () => {
    const out = execFileSync(promtool(), ['test', 'rules', 'alert-rules.test.yml'], { cwd: MONITORING, encoding: 'utf8' });
    expect(out).toMatch(/SUCCESS/);
    const tested = new Set([...readFileSync(path.join(MONITORING, 'alert-rules.test.yml'), 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    for (const a of ['PulseVaultQueueBacklog', 'PulseVaultMediaDiskFilling', 'PulseVaultHigh5xxRate', 'PulseVaultTranscodeFailed', 'PulseVaultRedisDown', 'PulseVaultAuditWriteFailures']) expect(tested, a).toContain(a);
  });

  it('the Grafana dashboard is importable: datasource input, unique panel ids, a query on every graph', () => {
    expect(dashboard.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(dashboard.__inputs[0].name).toBe('DS_PROMETHEUS');
    const ids = (dashboard.panels as Obj[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels as Obj[]) {
      if (p.type === 'row') continue;
      expect(p.datasource.uid, p.title).toBe('${DS_PROMETHEUS}');
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets as Obj[]) expect(t.expr, p.title).toBeTruthy();
    }
  });
});

describe('Prometheus scrape configuration', () => {
  const config = parseYaml(readFileSync(path.join(MONITORING, 'prometheus.yml'), 'utf8')) as Obj;
  const jobs = new Map((config.scrape_configs as Obj[]).map((j) => [j.job_name as string, j]));
  const sanitize = (label: string) => label.replace(/[^a-zA-Z0-9_]/g, '_');
  const manifests = (file: string) => parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as Obj);
  /** The label a job keeps on, and the value it keeps. */
  const keep = (job: string, prefix: string) => {
    const r = (jobs.get(job)!.relabel_configs as Obj[]).find((c) => c.action === 'keep' && c.source_labels[0].startsWith(prefix))!;
    return { label: (r.source_labels[0] as string).slice(prefix.length), value: r.regex as string };
  };

  it('loads the alert rules and names its jobs as the TargetDown alert expects', () => {
    for (const f of config.rule_files as string[]) expect(existsSync(path.join(MONITORING, f)), f).toBe(true);
    for (const job of jobs.keys()) expect(job).toMatch(/^pulsevault-/);
    expect(alertExprs.find((a) => a.where === 'alert PulseVaultTargetDown')!.expr).toContain('job=~"pulsevault-.*"');
  });

  it('selects pods by labels and port names they really have', () => {
    const stack = readStack('stack.yml');
    const fn = keep('pulsevault-functions', '__meta_kubernetes_pod_label_');
    for (const f of stack.functions) expect(Object.entries(f.labels).some(([k, v]) => sanitize(k) === fn.label && v === fn.value), f.name).toBe(true);
    // faas-netes names the function container's port "http".
    expect(keep('pulsevault-functions', '__meta_kubernetes_pod_container_port_name').value).toBe('http');

    const svc = keep('pulsevault-services', '__meta_kubernetes_pod_label_');
    for (const file of ['k8s/queue-connector.yaml', 'k8s/audit-writer.yaml']) {
      const d = manifests(file)[0]!;
      expect(Object.entries(d.spec.template.metadata.labels as Record<string, string>).some(([k, v]) => sanitize(k) === svc.label && v === svc.value), file).toBe(true);
      expect(d.spec.template.spec.containers[0].ports.map((p: Obj) => p.name)).toContain(keep('pulsevault-services', '__meta_kubernetes_pod_container_port_name').value);
    }

    const redis = manifests('k8s/redis.yaml').find((d) => d.kind === 'StatefulSet')!;
    const r = keep('pulsevault-redis', '__meta_kubernetes_pod_label_');
    expect(Object.entries(redis.spec.template.metadata.labels as Record<string, string>).some(([k, v]) => sanitize(k) === r.label && v === r.value)).toBe(true);
    const port = keep('pulsevault-redis', '__meta_kubernetes_pod_container_port_name').value;
    expect((redis.spec.template.spec.containers as Obj[]).find((c) => c.name === 'exporter')!.ports.map((p: Obj) => p.name)).toContain(port);
  });
});

describe('media volume gauges on a running stack', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  const REPLICAS = ['finalize-0', 'metadata-0', 'sign-0', 'stream-0', 'transcoder-0', 'tus-upload-0'];
  const scrape = async () => (await fetch(`${stack.url}/metrics`)).text();
  const replicasIn = (text: string) => [...text.matchAll(/^pulsevault_media_volume_size_bytes\{[^}]*replica="([^"]+)"[^}]*\} (\S+)$/gm)];
  /** A scrape that holds every replica (one still starting, or busy past the 2 s deadline, is missing from a first scrape). */
  const fullScrape = () => waitFor(async () => {
    const text = await scrape();
    return REPLICAS.every((r) => replicasIn(text).some((m) => m[1] === r)) && text;
  }, 60_000, 'a scrape with every replica', 500);

  it('every function reports the size and free space of MEDIA_ROOT at /metrics', async () => {
    const text = await fullScrape();
    expect(text).toContain('# HELP pulsevault_media_volume_size_bytes ');
    expect(text).toContain('# HELP pulsevault_media_volume_available_bytes ');
    const s = await statfs(stack.mediaRoot);
    const sizes = replicasIn(text);
    expect(sizes.map((m) => m[1]).sort()).toEqual(expect.arrayContaining(REPLICAS));
    for (const m of sizes) expect(Number(m[2])).toBe(s.blocks * s.bsize);
    const available = [...text.matchAll(/^pulsevault_media_volume_available_bytes\{[^}]*\} (\S+)$/gm)].map((m) => Number(m[1]));
    expect(available.length).toBe(sizes.length);
    for (const a of available) {
      expect(a).toBeGreaterThan(0);
      expect(a).toBeLessThanOrEqual(s.blocks * s.bsize);
    }
  });

  it('a replica that cannot answer in time keeps its last figures in the sums (no false counter reset)', async () => {
    await fullScrape();
    const health = (await (await fetch(`${stack.url}/`)).json()) as { functions: Record<string, { replicas: { pid: number | null }[] }> };
    const pid = health.functions.sign!.replicas[0]!.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      const text = await scrape(); // waits out the frozen replica's 2 s deadline
      expect(replicasIn(text).map((m) => m[1])).toContain('sign-0');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });
});
