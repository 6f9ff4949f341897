/**
 * `npm start`: the whole PulseVault system on one machine, no Kubernetes.
 * Each function in stack.yml runs as its own Node process (as a pod would), the
 * long-running services beside them, and the local gateway on PORT in front.
 * Redis comes from REDIS_URL / REDIS_HOST:REDIS_PORT, or is started as a child.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { aggregateMetrics, initMetrics, registry, type MetricSnapshot } from '../../shared/platform/metrics.js';
import { readStack } from '../../shared/platform/openfaas-stack.js';
import { createRedis, namesRedis, redisHealth } from '../../shared/platform/redis.js';
import { createConsoleRoute } from '../console/route.js';
import { createGateway, type GatewayBackend } from '../gateway/gateway.js';
import { createDevAuth, devAuthBanner, wantsDevAuth } from './dev-auth.js';
import { applyLocalDefaults, keptDevSecret, REPO_ROOT } from './local-defaults.js';
import { ensureRedis, startOwnRedis } from './local-redis.js';
import { freePort, Supervisor } from './supervisor.js';
import { TETHER } from './tethered.js';
import { which } from './which.js';
import { localDecryptModule } from '../media-edge/build-module.js';
import { edgeKeyInclude, mediaEdgeConfig } from '../media-edge/nginx-config.js';

const RUNTIME = path.join(REPO_ROOT, 'dist/templates/pulsevault-node20/runtime/main.js');

/** Long-running processes beside the functions (Deployments in k8s/). Started when built. */
const SERVICES = [
  // Stopped last: the functions' final audit entries reach it directly, not through the stream.
  { name: 'audit-writer', entry: 'dist/services/audit-writer/main.js', metricsPortVariable: 'AUDIT_METRICS_PORT', stopLast: true },
  { name: 'queue-connector', entry: 'dist/services/queue-connector/main.js', metricsPortVariable: 'QUEUE_CONNECTOR_METRICS_PORT', stopLast: false },
  { name: 'webhook-sender', entry: 'dist/services/webhook-sender/main.js', metricsPortVariable: 'WEBHOOK_METRICS_PORT', stopLast: false },
];

// `.env`, then media in ./data and development secrets kept under MEDIA_ROOT, unless set (never in production).
const keptSecrets = applyLocalDefaults(process.env, { create: true });
const config = loadConfigOrExit();
const log = createLogger('devstack', config.logLevel);
initMetrics('gateway');
// The audit writer signs checkpoints with it; production always sets its own.
if (!config.auditSigningKey) {
  process.stderr.write('invalid configuration: AUDIT_SIGNING_KEY is required in production\n');
  process.exit(78);
}
for (const { name, file, created } of keptSecrets) {
  log.info({ secret: name, file }, created ? `${name} is not set: generated a development one, kept under MEDIA_ROOT for the next runs (never used in production)` : `${name} is not set: using the development one kept under MEDIA_ROOT`);
}

for (const dir of [config.mediaRoot, config.uploadDir, config.videoDir, config.auditDir]) mkdirSync(dir, { recursive: true });

const redis = namesRedis(config) ? await ensureRedis(config, log) : await startOwnRedis(config, log);
// Only watched, so GET / shows a Redis outage while it lasts (the functions' own connections say the same in /_/health).
const redisWatch = createRedis({ ...config, redis: { ...config.redis, url: redis.url } }, { name: 'devstack', log });
const stack = readStack(config.stackFile ?? path.join(REPO_ROOT, 'stack.yml'));
/** With nginx installed it is the front door on PORT (the media edge, as in k8s/); the gateway moves behind it. */
const nginx = config.mediaEdge === 'auto' ? which('nginx') : null;
const publicUrl = `http://127.0.0.1:${config.port}`;
const gatewayPort = nginx ? await freePort() : config.port;
const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
const supervisor = new Supervisor(log, config.shutdownTimeoutMs + 5_000);
const devAuth = wantsDevAuth(config) ? await createDevAuth(config, keptDevSecret(config.mediaRoot, 'DEV_JWT_SECRET', true)!.value) : null;

/** The audit writer's direct intake (shared/audit/intake.ts); the functions reach it on loopback. */
const auditIntakePort = config.auditIntakePort ?? (await freePort());

const baseEnv: NodeJS.ProcessEnv = {
  ...process.env,
  AUDIT_INTAKE_PORT: String(auditIntakePort),
  AUDIT_WRITER_URL: `tcp://127.0.0.1:${auditIntakePort}`,
  // The writer and the functions are all children of this run: a fresh random key each run is enough.
  AUDIT_INTAKE_KEY: config.auditIntakeKey ?? randomBytes(32).toString('hex'),
  // nginx (the media edge) proves its edge headers to the stream function with it; also per run.
  MEDIA_EDGE_KEY: config.mediaEdgeKey ?? randomBytes(32).toString('hex'),
  MEDIA_ROOT: config.mediaRoot,
  UPLOAD_DIR: config.uploadDir,
  VIDEO_DIR: config.videoDir,
  AUDIT_DIR: config.auditDir,
  REDIS_URL: redis.url,
  GATEWAY_URL: gatewayUrl,
  STACK_FILE: config.stackFile ?? path.join(REPO_ROOT, 'stack.yml'),
  AUDIT_SIGNING_KEY: config.auditSigningKey,
  ...(devAuth ? { AUTH_JWT_SECRET: devAuth.secret } : {}),
};

const streamPorts: number[] = [];
for (const fn of stack.functions) {
  // stack.yml's environment is the function's production setting; the local environment wins,
  // except NODE_ENV (production would demand auth configuration on a developer's machine).
  const { NODE_ENV: _production, ...stackEnv } = fn.environment;
  const replicas = config.localReplicas[fn.name] ?? 1;
  for (let replica = 0; replica < replicas; replica++) {
    const port = await freePort();
    if (fn.name === 'stream') streamPorts.push(port);
    supervisor.add({
      name: fn.name,
      replica,
      port,
      args: [RUNTIME, path.join(REPO_ROOT, 'dist/functions', fn.name, 'handler.js')],
      env: { ...stackEnv, ...baseEnv, FUNCTION_NAME: fn.name, PORT: String(port), HOST: '127.0.0.1' },
    });
  }
}
/** Where each service serves its metrics (it has no health port), for the aggregate at GET /metrics. */
const serviceMetrics = new Map<string, string>();
for (const svc of SERVICES) {
  const entry = path.join(REPO_ROOT, svc.entry);
  if (!existsSync(entry)) continue;
  const metricsPort = await freePort();
  serviceMetrics.set(`${svc.name}-0`, `http://127.0.0.1:${metricsPort}`);
  supervisor.add({ name: svc.name, replica: 0, stopLast: svc.stopLast, args: [entry], env: { ...baseEnv, FUNCTION_NAME: svc.name, HOST: '127.0.0.1', [svc.metricsPortVariable]: String(metricsPort) } });
}

/** The media edge's scratch directory (config, pid, temp files); removed on stop. */
let edgeDir: string | null = null;
if (nginx) {
  edgeDir = mkdtempSync(path.join(tmpdir(), 'pv-edge-'));
  const conf = path.join(edgeDir, 'nginx.conf');
  const edgeKeyFile = path.join(edgeDir, 'edge-key.conf');
  writeFileSync(edgeKeyFile, edgeKeyInclude(baseEnv.MEDIA_EDGE_KEY!), { mode: 0o600 });
  const me = userInfo();
  const decryptModule = await localDecryptModule(nginx);
  writeFileSync(
    conf,
    mediaEdgeConfig({
      listen: config.host.includes(':') ? `[${config.host}]:${config.port}` : `${config.host}:${config.port}`,
      videoDir: realpathSync(config.videoDir),
      stream: streamPorts.map((port) => `127.0.0.1:${port}`),
      otherwise: `127.0.0.1:${gatewayPort}`,
      tempDir: edgeDir,
      user: me.uid === 0 ? me.username : null,
      // Not /dev/stdout: nginx cannot open it when it is a socket, as Node's stdio pipes are.
      accessLog: path.join(edgeDir, 'access.log'),
      edgeKeyFile,
      decryptModule: 'path' in decryptModule ? decryptModule.path : null,
    }),
  );
  // nginx in the foreground through the tether; SIGQUIT: it finishes the responses in flight, then exits.
  supervisor.add({ name: 'media-edge', replica: 0, args: [TETHER, 'SIGQUIT', nginx, '-p', edgeDir, '-c', conf], env: baseEnv });
  log.info({ nginx, port: config.port, accessLog: path.join(edgeDir, 'access.log') }, 'media edge: nginx is the front door and sends media bytes; the stream function decides and audits (a grant per token and rendition, or per request)');
  log.info(
    'path' in decryptModule ? { decryptModule: decryptModule.path } : { decryptModule: null, why: decryptModule.missing },
    'path' in decryptModule ? 'media edge: nginx decrypts encrypted originals itself (its decryption module)' : 'media edge: no decryption module, the stream function decrypts encrypted originals itself',
  );
} else {
  log.info(
    { mediaEdge: config.mediaEdge },
    config.mediaEdge === 'off' ? 'media edge off (MEDIA_EDGE=off): the stream function sends media bytes itself' : 'nginx not found: the stream function sends media bytes itself (install nginx for the media edge)',
  );
}

const rr = new Map<string, number>();
/** Each replica's last metrics snapshot, by replica name. */
const lastSnapshots = new Map<string, MetricSnapshot>();

const backend: GatewayBackend = {
  has: (fn) => stack.functions.some((f) => f.name === fn),
  pick(fn) {
    const ready = supervisor.ready(fn);
    if (ready.length === 0) return undefined;
    const i = (rr.get(fn) ?? 0) % ready.length;
    rr.set(fn, i + 1);
    return ready[i]!.url ?? undefined;
  },
  async health() {
    const functions = Object.fromEntries(
      stack.functions.map((f) => {
        const replicas = supervisor.processes.filter((p) => p.spec.name === f.name);
        return [f.name, { ready: replicas.filter((p) => p.state === 'ready').length, replicas: replicas.map((p) => ({ state: p.state, restarts: p.restarts, pid: p.child?.pid ?? null })) }];
      }),
    );
    const services = Object.fromEntries(
      supervisor.processes.filter((p) => !p.spec.port).map((p) => [p.spec.name, { state: p.state, restarts: p.restarts, pid: p.child?.pid ?? null }]),
    );
    const redisUp = (await redisHealth())?.up ?? false;
    const ok = redisUp && supervisor.processes.every((p) => p.state === 'ready');
    return { status: ok ? 'ok' : 'degraded', redis: redisUp ? 'up' : 'down', functions, services };
  },
  async metrics() {
    const sources = [
      ...supervisor.processes.filter((p) => p.url && p.state === 'ready').map((p) => [`${p.spec.name}-${p.spec.replica}`, p.url!] as const),
      ...serviceMetrics,
    ];
    const snapshots = await Promise.all(
      sources.map(async ([replica, url]) => {
        try {
          const res = await fetch(`${url}/_/metrics.json`, { signal: AbortSignal.timeout(2_000) });
          const metrics = (await res.json()) as MetricSnapshot;
          lastSnapshots.set(replica, metrics);
          return { replica, metrics };
        } catch {
          // A replica too busy to answer in time keeps its last figures: left out, its counters would
          // drop from the sums, and Prometheus would read that as a reset.
          return { replica, metrics: lastSnapshots.get(replica) ?? ([] as MetricSnapshot) };
        }
      }),
    );
    snapshots.push({ replica: 'gateway-0', metrics: await registry.getMetricsAsJSON() });
    return aggregateMetrics(snapshots);
  },
  systemFunctions() {
    return stack.functions.map((f) => ({
      name: f.name,
      image: f.image,
      labels: f.labels,
      annotations: f.annotations,
      replicas: supervisor.processes.filter((p) => p.spec.name === f.name).length,
      availableReplicas: supervisor.ready(f.name).length,
    }));
  },
};

const gateway = createGateway(backend, log, [createConsoleRoute({ root: REPO_ROOT })]);

// Handlers first: Ctrl-C while the functions are still starting must stop them too, not orphan them.
let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping the local stack');
  const closed = new Promise<void>((resolve) => gateway.close(() => resolve()));
  gateway.closeIdleConnections();
  await supervisor.stopAll();
  gateway.closeAllConnections();
  await closed;
  redisWatch.disconnect();
  await redis.stop();
  if (edgeDir) rmSync(edgeDir, { recursive: true, force: true });
  log.info('local stack stopped');
  process.exit(0);
}
// `on`, not `once`: a Ctrl-C reaches us twice (from the terminal, and forwarded by npm); the second must not kill us mid-stop.
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
stopWithLauncher();

await new Promise<void>((resolve, reject) => {
  gateway.once('error', reject);
  // Behind the edge only nginx talks to the gateway.
  gateway.listen(gatewayPort, nginx ? '127.0.0.1' : config.host, () => resolve());
});
await supervisor.startAll();
if (nginx) await untilAnswering(publicUrl, 10_000);
if (!stopping) {
  log.info({ url: publicUrl, mediaRoot: config.mediaRoot, health: backend.health() }, `PulseVault local stack ready on ${publicUrl}`);
  if (devAuth) process.stdout.write(devAuthBanner(devAuth, publicUrl));
}

/**
 * Started by `npm start`, npm is the parent: when npm is gone without passing a signal on
 * (SIGKILLed), the stack stops too rather than keep PORT as an orphan. A devstack started
 * from a shell directly outlives it, as any server would.
 */
function stopWithLauncher(): void {
  if (!process.env.npm_lifecycle_event) return;
  const launcher = process.ppid;
  setInterval(() => {
    if (process.ppid !== launcher) void stop('npm exited');
  }, 500).unref();
}

/** nginx has no health port of its own: it is up once it answers anything on PORT. */
async function untilAnswering(url: string, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!stopping && Date.now() < until) {
    if (await fetch(url, { signal: AbortSignal.timeout(1_000) }).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!stopping) log.error({ url }, 'the media edge (nginx) did not answer in time');
}
