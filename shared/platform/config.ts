/**
 * Configuration: every variable PulseVault reads, parsed and validated once at
 * start-up. Nothing else in the code base reads `process.env`.
 *
 * Secrets come from the environment or, as on OpenFaaS, from the secret file
 * `/var/openfaas/secrets/<name>` (directory overridable with `SECRETS_DIR`).
 * A missing or malformed value stops start-up with one line naming the variable.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

export class ConfigError extends Error {
  constructor(readonly variable: string, detail: string) {
    super(`invalid configuration: ${variable} ${detail}`);
    this.name = 'ConfigError';
  }
}

/** Rendition heights we know a bitrate for (see shared/transcode ladder table). */
export const KNOWN_RENDITIONS = ['144p', '240p', '360p', '480p', '720p', '1080p', '1440p', '2160p'] as const;
export type RenditionName = (typeof KNOWN_RENDITIONS)[number];


/** Secret variables and the OpenFaaS secret file each may come from. */
const SECRET_FILES: Record<string, string> = {
  HMAC_SECRET: 'hmac-secret',
  HMAC_SECRET_PREVIOUS: 'hmac-secret-previous',
  REDIS_PASSWORD: 'redis-password',
  REDIS_SENTINEL_PASSWORD: 'redis-sentinel-password',
  AUTH_JWT_SECRET: 'auth-jwt-secret',
  AUDIT_SIGNING_KEY: 'audit-signing-key',
  AUDIT_INTAKE_KEY: 'audit-intake-key',
  MEDIA_EDGE_KEY: 'media-edge-key',
  METADATA_DSN: 'metadata-dsn',
  OPENFAAS_GATEWAY_PASSWORD: 'basic-auth-password',
  MEDIA_KEK: 'media-kek',
  MEDIA_KEK_PREVIOUS: 'media-kek-previous',
};

const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const int = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^-?\d+$/, 'must be an integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

const optionalSecret = (minBytes: number) =>
  z.string().refine((v) => v === '' || Buffer.byteLength(v) >= minBytes, `must be empty or at least ${minBytes} bytes`);

/** A key-encryption key as `<kek id>:<32 bytes, base64>`: the id names it in every wrapped data key (shared/keys/kek.ts). */
const KEK_SPEC = /^([a-z][a-z0-9._-]{0,63}):([A-Za-z0-9+/_-]{43}=?)$/;
const kekOf = (spec: string) => {
  const m = KEK_SPEC.exec(spec.trim());
  const key = m ? Buffer.from(m[2]!, 'base64') : null;
  return m && key?.length === 32 ? { id: m[1]!, key } : null;
};
const keks = z
  .string()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
  .refine((l) => l.every((e) => kekOf(e) !== null), 'must be <kek id: lowercase code>:<32 random bytes in base64> (comma-separated for MEDIA_KEK_PREVIOUS), e.g. from: echo "k1:$(openssl rand -base64 32)"')
  .transform((l) => l.map((e) => kekOf(e)!));

/** OpenFaaS duration: Go syntax (`15m`, `1m30s`, `500ms`) or whole seconds, as of-watchdog reads it; 0 = none. */
const GO_DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const durationMs = z
  .string()
  .trim()
  .refine((v) => /^\d+$/.test(v) || /^(\d+(\.\d+)?(ms|s|m|h))+$/.test(v), 'must be a duration such as 30s, 15m or 1h30m (or whole seconds)')
  .transform((v) =>
    /^\d+$/.test(v) ? Number(v) * 1000 : [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)].reduce((ms, [, n, unit]) => ms + Number(n) * GO_DURATION_UNITS[unit!]!, 0),
  );

const url = z.string().trim().refine((v) => v === '' || URL.canParse(v), 'must be a URL');

const renditions = z
  .string()
  .trim()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
  .refine((list) => list.length > 0, 'must name at least one rendition')
  .refine(
    (list) => list.every((r) => (KNOWN_RENDITIONS as readonly string[]).includes(r)),
    `must be a comma-separated list of ${KNOWN_RENDITIONS.join(', ')}`,
  )
  .refine((list) => new Set(list).size === list.length, 'must not repeat a rendition')
  .transform((list) => list as RenditionName[]);

const list = z
  .string()
  .trim()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean));

/** `host:port,host:port` (IPv6 in brackets) as socket addresses. */
const hostPorts = list
  .refine((l) => l.every((e) => /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):\d{1,5}$/.test(e) && Number(e.split(':').pop()) >= 1 && Number(e.split(':').pop()) <= 65535), 'must be a comma-separated list of host:port')
  .transform((l) =>
    l.map((e) => {
      const at = e.lastIndexOf(':');
      return { host: e.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(e.slice(at + 1)) };
    }),
  );

/** Hostnames (`*.example.com` for subdomains), addresses and CIDRs (shared/webhooks/allow-list.ts reads them). */
const allowEntries = list.refine(
  (l) => l.every((e) => (e.includes('/') ? ipaddr.isValidCIDR(e) : ipaddr.isValid(e) || /^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(e))),
  'must be a comma-separated list of hostnames (*.example.com for subdomains), addresses and CIDRs',
);

/**
 * The variables, their defaults (as strings, as they would appear in `.env`) and
 * parsers. `.env.example` lists each of them; a test keeps the two in step.
 */
const VARIABLES = {
  PORT: { default: '3000', parse: int(1, 65535) },
  HOST: { default: '0.0.0.0', parse: z.string().trim().min(1) },
  NODE_ENV: { default: 'development', parse: z.enum(['development', 'production', 'test']) },
  LOG_LEVEL: { default: 'info', parse: z.enum(['debug', 'info', 'warn', 'error']) },
  METRICS_ENABLED: { default: 'true', parse: bool },

  MEDIA_ROOT: { default: '/mnt/media', parse: z.string().trim().min(1) },
  UPLOAD_DIR: { default: '', parse: z.string().trim() },
  VIDEO_DIR: { default: '', parse: z.string().trim() },
  AUDIT_DIR: { default: '', parse: z.string().trim() },
  KEY_DIR: { default: '', parse: z.string().trim() },
  MEDIA_KEK: { default: '', parse: keks.refine((l) => l.length <= 1, 'must be one key') },
  MEDIA_KEK_PREVIOUS: { default: '', parse: keks },

  HMAC_SECRET: { default: '', parse: optionalSecret(32) },
  HMAC_SECRET_PREVIOUS: { default: '', parse: optionalSecret(32) },
  TOKEN_EXPIRY_SECONDS: { default: '300', parse: int(1, 300) },
  TOKEN_CLOCK_SKEW_SECONDS: { default: '30', parse: int(0, 120) },

  REDIS_URL: { default: '', parse: url },
  REDIS_HOST: { default: 'localhost', parse: z.string().trim().min(1) },
  REDIS_PORT: { default: '6379', parse: int(1, 65535) },
  REDIS_PASSWORD: { default: '', parse: z.string() },
  REDIS_DB: { default: '0', parse: int(0, 15) },
  REDIS_COMMAND_TIMEOUT_MS: { default: '2000', parse: int(50, 60_000) },
  REDIS_SENTINELS: { default: '', parse: hostPorts },
  REDIS_SENTINEL_NAME: { default: 'pulsevault', parse: z.string().trim().regex(/^[A-Za-z0-9._-]+$/, 'must be a Sentinel master name') },
  REDIS_SENTINEL_PASSWORD: { default: '', parse: z.string() },

  METADATA_DSN: {
    default: '',
    parse: url.refine((v) => v === '' || /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// URL'),
  },
  METADATA_MIRROR_PHI: { default: 'false', parse: bool },

  MAX_UPLOAD_BYTES: { default: String(20 * 1024 ** 3), parse: int(1, Number.MAX_SAFE_INTEGER) },
  UPLOAD_EXPIRY_HOURS: { default: '24', parse: int(1, 24 * 365) },
  UPLOAD_SWEEP_INTERVAL_SECONDS: { default: '600', parse: int(1, 24 * 3600) },
  RETENTION_DAYS: { default: '0', parse: int(0, 100 * 366) },
  PUBLIC_URL: { default: '', parse: url },
  TRUST_PROXY: {
    default: '',
    parse: list.refine(
      // Strict forms only: ipaddr.isValid also takes classful shorthands like `10.1`.
      (l) =>
        l.every((e) =>
          e.includes('/') ? ipaddr.IPv4.isValidCIDRFourPartDecimal(e) || ipaddr.IPv6.isValidCIDR(e) : ipaddr.IPv4.isValidFourPartDecimal(e) || ipaddr.IPv6.isValid(e),
        ),
      'must be a comma-separated list of trusted proxy addresses or CIDRs, e.g. 10.244.0.0/16,127.0.0.1',
    ),
  },

  CORS_ORIGINS: { default: '', parse: list },
  HSTS_ENABLED: { default: 'false', parse: bool },

  AUTH_JWKS_URL: { default: '', parse: url },
  AUTH_JWT_SECRET: { default: '', parse: optionalSecret(32) },
  AUTH_ISSUER: { default: '', parse: z.string().trim() },
  AUTH_AUDIENCE: { default: '', parse: z.string().trim() },
  AUTH_ROLES_CLAIM: { default: 'roles', parse: z.string().trim().min(1) },
  // Read by Node itself at start-up (extra trusted CAs for every outbound TLS connection); parsed here so it is documented and checked.
  NODE_EXTRA_CA_CERTS: { default: '', parse: z.string().trim().refine((v) => v === '' || v.startsWith('/'), 'must be an absolute path to a PEM file') },

  AUDIT_SIGNING_KEY: { default: '', parse: optionalSecret(32) },
  AUDIT_ACK_TIMEOUT_MS: { default: '2000', parse: int(50, 60_000) },
  AUDIT_WRITER_LEASE_SECONDS: { default: '10', parse: int(2, 300) },
  AUDIT_CHECKPOINT_INTERVAL_MS: { default: '5000', parse: int(0, 60_000) },
  AUDIT_METRICS_PORT: { default: '0', parse: int(0, 65535) },
  AUDIT_INTAKE_PORT: { default: '0', parse: int(0, 65535) },
  AUDIT_INTAKE_KEY: { default: '', parse: optionalSecret(32) },
  AUDIT_INTAKE_IDLE_SECONDS: { default: '300', parse: int(1, 86_400) },
  // nginx sends it in a quoted string of its configuration: no quotes, backslashes or `$`.
  MEDIA_EDGE_KEY: { default: '', parse: optionalSecret(32).refine((v) => /^[A-Za-z0-9+/=._-]*$/.test(v), 'must be letters, digits and + / = . _ - (openssl rand -hex 32)') },
  AUDIT_WRITER_URL: {
    default: '',
    parse: z
      .string()
      .trim()
      .refine((v) => {
        const m = /^tcp:\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})$/.exec(v);
        return v === '' || (m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535);
      }, 'must be tcp://<host>:<port> or empty'),
  },

  TRANSCODE_ENABLED: { default: 'true', parse: bool },
  FFMPEG_THREADS: { default: '0', parse: int(0, 256) },
  FFMPEG_PRESET: {
    default: 'veryfast',
    parse: z.enum(['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow', 'slower', 'veryslow']),
  },
  RENDITIONS: { default: '240p,360p,480p,720p,1080p', parse: renditions },
  ENABLE_HEVC: { default: 'false', parse: bool },
  ENABLE_AV1: { default: 'false', parse: bool },
  TRANSCODE_CONCURRENCY: { default: '1', parse: int(1, 64) },
  TRANSCODE_MAX_ATTEMPTS: { default: '3', parse: int(1, 20) },
  TRANSCODE_TIMEOUT_SECONDS: { default: '3600', parse: int(10, 6 * 3600) },
  TRANSCODE_LEASE_SECONDS: { default: '60', parse: int(5, 3600) },
  TRANSCODE_RETRY_BASE_SECONDS: { default: '30', parse: int(1, 3600) },
  TRANSCODE_CHUNK_SEGMENTS: { default: '15', parse: int(0, 1800) },
  QUEUE_CONNECTOR_METRICS_PORT: { default: '0', parse: int(0, 65535) },

  WEBHOOK_ALLOWED_HOSTS: { default: '', parse: allowEntries },
  WEBHOOK_ALLOWED_HTTP_HOSTS: { default: '', parse: allowEntries },
  WEBHOOK_TIMEOUT_SECONDS: { default: '10', parse: int(1, 10) },
  WEBHOOK_RETRY_BASE: { default: '30s', parse: durationMs },
  WEBHOOK_RETRY_FOR: { default: '24h', parse: durationMs },
  WEBHOOK_ROTATION_WINDOW: { default: '24h', parse: durationMs },
  WEBHOOK_METRICS_PORT: { default: '0', parse: int(0, 65535) },

  GATEWAY_URL: { default: 'http://127.0.0.1:8080', parse: url },
  OPENFAAS_GATEWAY_USER: { default: 'admin', parse: z.string() },
  OPENFAAS_GATEWAY_PASSWORD: { default: '', parse: z.string() },
  STACK_FILE: { default: '', parse: z.string().trim() },

  SHUTDOWN_TIMEOUT_SECONDS: { default: '25', parse: int(0, 3600) },
  // The OpenFaaS workload contract, under the names of-watchdog reads (stack.yml `environment`).
  read_timeout: { default: '0', parse: durationMs },
  write_timeout: { default: '0', parse: durationMs },
  exec_timeout: { default: '0', parse: durationMs },
  max_inflight: { default: '0', parse: int(0, 100_000) },
  healthcheck_interval: { default: '0', parse: durationMs },
  LOCAL_REPLICAS: {
    default: '',
    parse: list
      .refine((l) => l.every((e) => /^[a-z0-9-]+=\d+$/.test(e)), 'must look like tus-upload=2,stream=2')
      .transform((l) => Object.fromEntries(l.map((e) => [e.split('=')[0]!, Number(e.split('=')[1])]))),
  },
  MEDIA_EDGE: { default: 'auto', parse: z.enum(['auto', 'off']) },
  FUNCTION_NAME: { default: '', parse: z.string().trim().regex(/^[a-z0-9-]*$/, 'must be a lowercase function name') },
} as const satisfies Record<string, { default: string; parse: z.ZodType<unknown, string> }>;

export type VariableName = keyof typeof VARIABLES;
type Parsed = { [K in VariableName]: z.output<(typeof VARIABLES)[K]['parse']> };

/**
 * Names of every variable, with the default, whether it is a secret and the OpenFaaS
 * secret file it may come from (for `.env.example`, stack.yml and k8s/ checks and docs).
 */
export function describeVariables(): { name: VariableName; default: string; secret: boolean; secretFile: string | null }[] {
  return (Object.keys(VARIABLES) as VariableName[]).map((name) => ({
    name,
    default: VARIABLES[name].default,
    secret: name in SECRET_FILES,
    secretFile: SECRET_FILES[name] ?? null,
  }));
}

export interface Config {
  port: number;
  host: string;
  nodeEnv: 'development' | 'production' | 'test';
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  metricsEnabled: boolean;
  mediaRoot: string;
  uploadDir: string;
  videoDir: string;
  auditDir: string;
  /** Wrapped per-video data keys, one file each (shared/keys/video-keys.ts); apart from VIDEO_DIR so a delete reaches media backups. */
  keyDir: string;
  /** The key-encryption key new data keys are wrapped under, and earlier ones still read; null = media stored in the clear. */
  mediaKek: { current: { id: string; key: Buffer }; previous: { id: string; key: Buffer }[] } | null;
  hmacSecret: string;
  hmacSecretPrevious: string | null;
  tokenExpirySeconds: number;
  tokenClockSkewSeconds: number;
  /** commandTimeoutMs: the deadline of every Redis command on a request path (a frozen Redis answers 503, never hangs). */
  redis: {
    url: string | null;
    host: string;
    port: number;
    password: string | null;
    db: number;
    commandTimeoutMs: number;
    /** Set: connect through these Sentinels to the primary they name (url/host/port are then unused). */
    sentinel: { sentinels: { host: string; port: number }[]; name: string; password: string | null } | null;
  };
  metadataDsn: string | null;
  metadataMirrorPhi: boolean;
  maxUploadBytes: number;
  uploadExpiryHours: number;
  uploadSweepIntervalMs: number;
  /** Site default retention in days from upload (finalize stamps retainUntil); 0 = off. */
  retentionDays: number;
  publicUrl: string | null;
  /**
   * The proxies whose X-Forwarded-* headers are believed (CIDRs or addresses): the ingress
   * controller's and the gateway's pods, loopback for the local gateway. Empty: none.
   */
  trustedProxies: string[];
  corsOrigins: string[];
  hstsEnabled: boolean;
  auth: {
    jwksUrl: string | null;
    jwtSecret: string | null;
    issuer: string | null;
    audience: string | null;
    rolesClaim: string;
  };
  auditSigningKey: string | null;
  auditAckTimeoutMs: number;
  /** The single audit writer's lease: how long a standby waits after the holder dies. */
  auditWriterLeaseMs: number;
  /** How often a growing audit file's signed checkpoint is refreshed; 0 = after every batch. */
  auditCheckpointIntervalMs: number;
  /** Port of the audit writer's /metrics (it serves no other HTTP); null = off. */
  auditMetricsPort: number | null;
  /** Port the audit writer takes events on directly (shared/audit/intake.ts); null = stream only. */
  auditIntakePort: number | null;
  /** How long an authenticated intake connection may stay quiet before the writer ends it. */
  auditIntakeIdleMs: number;
  /** Where functions hand audit events to the writer directly; null = through the Redis stream only. */
  auditWriter: { host: string; port: number } | null;
  /**
   * The secret both ends of direct submission prove they hold (AUDIT_INTAKE_KEY, ≥ 32 bytes); null =
   * no direct submission at all (the intake stays closed, functions use the Redis stream).
   */
  auditIntakeKey: string | null;
  /** The secret the media edge proves itself with (MEDIA_EDGE_KEY); null = edge headers are never believed. */
  mediaEdgeKey: string | null;
  transcode: {
    enabled: boolean;
    ffmpegThreads: number;
    /** x264/x265 speed preset: production quality vs. time (tests use ultrafast). */
    ffmpegPreset: 'ultrafast' | 'superfast' | 'veryfast' | 'faster' | 'fast' | 'medium' | 'slow' | 'slower' | 'veryslow';
    renditions: RenditionName[];
    enableHevc: boolean;
    enableAv1: boolean;
    concurrency: number;
    maxAttempts: number;
    timeoutSeconds: number;
    leaseSeconds: number;
    /** First retry delay; doubles per attempt (with jitter). */
    retryBaseSeconds: number;
    /** Fan-out chunk length in HLS segments (a video longer than one chunk is split across replicas); 0 = never split. */
    chunkSegments: number;
    /** Port of the queue connector's /metrics (null: none; the local stack reads queue gauges from the transcoder). */
    connectorMetricsPort: number | null;
  };
  /** Signed webhooks (shared/webhooks/): the SSRF allow-list, the attempt deadline, the retry schedule. */
  webhooks: {
    allowedHosts: string[];
    allowedHttpHosts: string[];
    timeoutMs: number;
    retryBaseMs: number;
    /** Retries stop this long after the first attempt: dead letter (at least 24 h in production). */
    retryForMs: number;
    /** How long a rotated-out secret still signs (two signatures meanwhile). */
    rotationWindowMs: number;
    metricsPort: number | null;
  };
  gateway: { url: string; user: string; password: string | null };
  stackFile: string | null;
  shutdownTimeoutMs: number;
  /**
   * A function's OpenFaaS workload settings (0 = none): the runtime enforces them itself, as
   * of-watchdog would, and bounds its drain on SIGTERM by the longest request they allow.
   */
  workload: { readTimeoutMs: number; writeTimeoutMs: number; execTimeoutMs: number; maxInflight: number; healthcheckIntervalMs: number };
  /** Local stack only: replicas per function (default 1), as Kubernetes would scale them. */
  localReplicas: Record<string, number>;
  /** Local stack: put Debian's nginx in front as the media edge when installed ('auto'), or never ('off'). */
  mediaEdge: 'auto' | 'off';
  /** Set per function in stack.yml (and by the local stack); names logs and metrics. */
  functionName: string | null;
}

export interface LoadOptions {
  /**
   * Variables this process cannot run without. Default: HMAC_SECRET (every function).
   * Services and CLIs name what they need instead (the audit writer: AUDIT_SIGNING_KEY).
   */
  require?: VariableName[];
  /** Where OpenFaaS mounts secrets. Defaults to `SECRETS_DIR` or /var/openfaas/secrets. */
  secretsDir?: string;
}

function readSecretFile(dir: string, name: string): string | undefined {
  try {
    // Secret files usually end with a newline from `echo`; it is never part of the secret.
    return readFileSync(path.join(dir, name), 'utf8').replace(/\r?\n$/, '');
  } catch {
    return undefined;
  }
}

function rawValue(env: NodeJS.ProcessEnv, name: VariableName, secretsDir: string): string | undefined {
  const fromEnv = env[name];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const file = SECRET_FILES[name];
  return file ? readSecretFile(secretsDir, file) : fromEnv;
}

/** Parse and validate the whole configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Config {
  const secretsDir = options.secretsDir ?? env.SECRETS_DIR ?? '/var/openfaas/secrets';
  const required = new Set<VariableName>(options.require ?? ['HMAC_SECRET']);
  const v = {} as Record<VariableName, unknown>;
  for (const name of Object.keys(VARIABLES) as VariableName[]) {
    const raw = rawValue(env, name, secretsDir);
    if ((raw === undefined || raw === '') && required.has(name)) {
      const file = SECRET_FILES[name];
      throw new ConfigError(name, `is required${file ? ` (set it or mount the secret ${file})` : ''}`);
    }
    const result = VARIABLES[name].parse.safeParse(raw ?? VARIABLES[name].default);
    if (!result.success) {
      const issue = result.error.issues[0];
      const shown = name in SECRET_FILES ? '' : ` (got ${JSON.stringify(raw)})`;
      throw new ConfigError(name, `${issue?.message ?? 'is invalid'}${shown}`);
    }
    v[name] = result.data;
  }
  const p = v as Parsed;
  const orNull = (s: string) => (s === '' ? null : s);
  const mediaRoot = path.resolve(p.MEDIA_ROOT);

  const config: Config = {
    port: p.PORT,
    host: p.HOST,
    nodeEnv: p.NODE_ENV,
    logLevel: p.LOG_LEVEL,
    metricsEnabled: p.METRICS_ENABLED,
    mediaRoot,
    uploadDir: path.resolve(p.UPLOAD_DIR || path.join(mediaRoot, 'uploads')),
    videoDir: path.resolve(p.VIDEO_DIR || path.join(mediaRoot, 'videos')),
    auditDir: path.resolve(p.AUDIT_DIR || path.join(mediaRoot, 'audit')),
    keyDir: path.resolve(p.KEY_DIR || path.join(mediaRoot, 'keys')),
    mediaKek: p.MEDIA_KEK[0] ? { current: p.MEDIA_KEK[0], previous: p.MEDIA_KEK_PREVIOUS } : null,
    hmacSecret: p.HMAC_SECRET,
    hmacSecretPrevious: orNull(p.HMAC_SECRET_PREVIOUS),
    tokenExpirySeconds: p.TOKEN_EXPIRY_SECONDS,
    tokenClockSkewSeconds: p.TOKEN_CLOCK_SKEW_SECONDS,
    redis: {
      url: orNull(p.REDIS_URL),
      host: p.REDIS_HOST,
      port: p.REDIS_PORT,
      password: orNull(p.REDIS_PASSWORD),
      db: p.REDIS_DB,
      commandTimeoutMs: p.REDIS_COMMAND_TIMEOUT_MS,
      sentinel:
        p.REDIS_SENTINELS.length > 0 ? { sentinels: p.REDIS_SENTINELS, name: p.REDIS_SENTINEL_NAME, password: orNull(p.REDIS_SENTINEL_PASSWORD) } : null,
    },
    metadataDsn: orNull(p.METADATA_DSN),
    metadataMirrorPhi: p.METADATA_MIRROR_PHI,
    maxUploadBytes: p.MAX_UPLOAD_BYTES,
    uploadExpiryHours: p.UPLOAD_EXPIRY_HOURS,
    uploadSweepIntervalMs: p.UPLOAD_SWEEP_INTERVAL_SECONDS * 1000,
    retentionDays: p.RETENTION_DAYS,
    publicUrl: orNull(p.PUBLIC_URL.replace(/\/+$/, '')),
    trustedProxies: p.TRUST_PROXY,
    corsOrigins: p.CORS_ORIGINS,
    hstsEnabled: p.HSTS_ENABLED,
    auth: {
      jwksUrl: orNull(p.AUTH_JWKS_URL),
      jwtSecret: orNull(p.AUTH_JWT_SECRET),
      issuer: orNull(p.AUTH_ISSUER),
      audience: orNull(p.AUTH_AUDIENCE),
      rolesClaim: p.AUTH_ROLES_CLAIM,
    },
    auditSigningKey: orNull(p.AUDIT_SIGNING_KEY),
    auditAckTimeoutMs: p.AUDIT_ACK_TIMEOUT_MS,
    auditWriterLeaseMs: p.AUDIT_WRITER_LEASE_SECONDS * 1000,
    auditCheckpointIntervalMs: p.AUDIT_CHECKPOINT_INTERVAL_MS,
    auditMetricsPort: p.AUDIT_METRICS_PORT === 0 ? null : p.AUDIT_METRICS_PORT,
    auditIntakePort: p.AUDIT_INTAKE_PORT === 0 ? null : p.AUDIT_INTAKE_PORT,
    auditIntakeIdleMs: p.AUDIT_INTAKE_IDLE_SECONDS * 1000,
    auditWriter: tcpAddress(p.AUDIT_WRITER_URL),
    auditIntakeKey: orNull(p.AUDIT_INTAKE_KEY),
    mediaEdgeKey: orNull(p.MEDIA_EDGE_KEY),
    transcode: {
      enabled: p.TRANSCODE_ENABLED,
      ffmpegThreads: p.FFMPEG_THREADS,
      ffmpegPreset: p.FFMPEG_PRESET,
      renditions: p.RENDITIONS,
      enableHevc: p.ENABLE_HEVC,
      enableAv1: p.ENABLE_AV1,
      concurrency: p.TRANSCODE_CONCURRENCY,
      maxAttempts: p.TRANSCODE_MAX_ATTEMPTS,
      timeoutSeconds: p.TRANSCODE_TIMEOUT_SECONDS,
      leaseSeconds: p.TRANSCODE_LEASE_SECONDS,
      retryBaseSeconds: p.TRANSCODE_RETRY_BASE_SECONDS,
      chunkSegments: p.TRANSCODE_CHUNK_SEGMENTS,
      connectorMetricsPort: p.QUEUE_CONNECTOR_METRICS_PORT === 0 ? null : p.QUEUE_CONNECTOR_METRICS_PORT,
    },
    webhooks: {
      allowedHosts: p.WEBHOOK_ALLOWED_HOSTS,
      allowedHttpHosts: p.WEBHOOK_ALLOWED_HTTP_HOSTS,
      timeoutMs: p.WEBHOOK_TIMEOUT_SECONDS * 1000,
      retryBaseMs: p.WEBHOOK_RETRY_BASE,
      retryForMs: p.WEBHOOK_RETRY_FOR,
      rotationWindowMs: p.WEBHOOK_ROTATION_WINDOW,
      metricsPort: p.WEBHOOK_METRICS_PORT === 0 ? null : p.WEBHOOK_METRICS_PORT,
    },
    gateway: {
      url: p.GATEWAY_URL.replace(/\/+$/, ''),
      user: p.OPENFAAS_GATEWAY_USER,
      password: orNull(p.OPENFAAS_GATEWAY_PASSWORD),
    },
    stackFile: orNull(p.STACK_FILE),
    shutdownTimeoutMs: p.SHUTDOWN_TIMEOUT_SECONDS * 1000,
    workload: {
      readTimeoutMs: p.read_timeout,
      writeTimeoutMs: p.write_timeout,
      execTimeoutMs: p.exec_timeout,
      maxInflight: p.max_inflight,
      healthcheckIntervalMs: p.healthcheck_interval,
    },
    localReplicas: p.LOCAL_REPLICAS,
    mediaEdge: p.MEDIA_EDGE,
    functionName: orNull(p.FUNCTION_NAME),
  };
  // Without its key the intake would answer anyone: production refuses to be configured for it half-way.
  if (config.nodeEnv === 'production' && (config.auditIntakePort || config.auditWriter) && !config.auditIntakeKey) {
    throw new ConfigError('AUDIT_INTAKE_KEY', 'is required in production with AUDIT_INTAKE_PORT or AUDIT_WRITER_URL (mount the secret audit-intake-key)');
  }
  // The issue's promise to integrators: a down receiver has at least a day to come back.
  if (config.nodeEnv === 'production' && config.webhooks.retryForMs < 24 * 3_600_000) throw new ConfigError('WEBHOOK_RETRY_FOR', 'must be at least 24h in production');
  return config;
}

/** Parse the configuration for a process entry point: exits with one line on stderr when invalid. */
export function loadConfigOrExit(options: LoadOptions = {}): Config {
  try {
    return loadConfig(process.env, options);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
}

/** `tcp://host:port` as a socket address (IPv6 brackets removed); null for ''. */
function tcpAddress(url: string): { host: string; port: number } | null {
  if (url === '') return null;
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port) };
}
