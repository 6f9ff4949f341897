/**
 * Defaults for running PulseVault on a developer's machine, shared by `npm start`
 * and the `pulsevault` CLI launcher (bin/pulsevault.js) so both see the same data.
 * The container images keep the production defaults (MEDIA_ROOT=/mnt/media) and
 * always get their secrets from the deployment.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, whether this file runs compiled (dist/services/devstack/) or from source (tests). */
const ABOVE_SERVICES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const REPO_ROOT = path.basename(ABOVE_SERVICES) === 'dist' ? path.dirname(ABOVE_SERVICES) : ABOVE_SERVICES;

/** Where a local run keeps its media unless MEDIA_ROOT says otherwise. */
export const LOCAL_MEDIA_ROOT = path.join(REPO_ROOT, 'data');

/**
 * Secrets a local run generates once and keeps under MEDIA_ROOT (mode 0600) when neither the
 * environment nor `.env` sets them, so audit pseudonyms, signed URLs, checkpoints and the dev
 * token survive a restart. Never outside development: production must bring its own.
 */
const DEV_SECRETS = {
  HMAC_SECRET: { file: '.dev-hmac-secret', make: () => randomBytes(32).toString('base64url') },
  AUDIT_SIGNING_KEY: { file: '.dev-audit-signing-key', make: () => randomBytes(32).toString('hex') },
  /** Wraps the per-video data keys (shared/keys/): beside the media it protects nothing from a copy of MEDIA_ROOT, so development only. */
  MEDIA_KEK: { file: '.dev-media-kek', make: () => `dev-${randomBytes(4).toString('hex')}:${randomBytes(32).toString('base64')}` },
  /** Signs the dev token (services/devstack/dev-auth.ts); not an environment variable of the stack. */
  DEV_JWT_SECRET: { file: '.dev-jwt-secret', make: () => randomBytes(32).toString('base64url') },
} as const;
export type DevSecretName = keyof typeof DEV_SECRETS;

export interface KeptSecret {
  name: DevSecretName;
  file: string;
  /** Made by this call (the first run on this MEDIA_ROOT). */
  created: boolean;
}

export function devSecretFile(mediaRoot: string, name: DevSecretName): string {
  return path.join(mediaRoot, DEV_SECRETS[name].file);
}

/** The kept secret `name`, made and stored now when `create` and there is none yet; null otherwise. */
export function keptDevSecret(mediaRoot: string, name: DevSecretName, create: boolean): { value: string; kept: KeptSecret } | null {
  const file = devSecretFile(mediaRoot, name);
  let created = false;
  if (!existsSync(file)) {
    if (!create) return null;
    mkdirSync(mediaRoot, { recursive: true });
    // 'wx': two first starts at once keep one secret, not two.
    try {
      writeFileSync(file, `${DEV_SECRETS[name].make()}\n`, { mode: 0o600, flag: 'wx' });
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return { value: readFileSync(file, 'utf8').trim(), kept: { name, file, created } };
}

/** While `npm start` runs its own Redis: the file naming its URL. */
export function localRedisUrlFile(mediaRoot: string): string {
  return path.join(mediaRoot, 'redis', 'url');
}

/** `.env` of the checkout, under the environment (a variable already set wins). Node loads it into process.env only. */
function loadDotEnv(env: NodeJS.ProcessEnv): void {
  const file = path.join(REPO_ROOT, '.env');
  // Tests choose their configuration explicitly: a developer's .env never leaks into them.
  if (env !== process.env || env.NODE_ENV === 'test' || !existsSync(file)) return;
  process.loadEnvFile(file);
}

/**
 * Fills in what a local run needs and the environment (or `.env`) leaves unset: MEDIA_ROOT
 * (./data) and, outside production, HMAC_SECRET, AUDIT_SIGNING_KEY and MEDIA_KEK from the secrets kept
 * under MEDIA_ROOT. `npm start` in development makes missing ones (`create`); the CLI, and
 * tests (NODE_ENV=test), only read what `npm start` made. Returns the kept secrets now in use.
 */
export function applyLocalDefaults(env: NodeJS.ProcessEnv, { create = false } = {}): KeptSecret[] {
  loadDotEnv(env);
  if (env.NODE_ENV === 'production') return [];
  env.MEDIA_ROOT ||= LOCAL_MEDIA_ROOT;
  const make = create && (env.NODE_ENV || 'development') === 'development';
  const used: KeptSecret[] = [];
  for (const name of ['HMAC_SECRET', 'AUDIT_SIGNING_KEY', 'MEDIA_KEK'] as const) {
    if (env[name]) continue;
    const secret = keptDevSecret(env.MEDIA_ROOT, name, make);
    if (!secret) continue;
    env[name] = secret.value;
    used.push(secret.kept);
  }
  // The CLI reaches the Redis `npm start` runs for itself (services/devstack/local-redis.ts).
  const redisUrlFile = localRedisUrlFile(env.MEDIA_ROOT);
  if (!create && !env.REDIS_URL && !env.REDIS_HOST && !env.REDIS_PORT && existsSync(redisUrlFile)) env.REDIS_URL = readFileSync(redisUrlFile, 'utf8').trim();
  return used;
}
