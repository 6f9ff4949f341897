/**
 * Production boot: every function and service starts with NODE_ENV=production from exactly
 * what stack.yml, `kubectl kustomize k8s/` (with a filled-in site block) and the documented
 * secret files give it, and `pulsevault doctor` names what is missing before a deploy.
 * Only the cluster wiring a test machine cannot have is replaced: Redis' address, the media
 * volume's path, listen ports, the secrets mount's directory.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../services/devstack/supervisor.js';
import { readStack } from '../shared/platform/openfaas-stack.js';
import { functionEnvironment, renderKustomization, serviceDeployment, type Manifest } from '../scripts/deployment.js';
import { untilAuditWriterReady } from './helpers/audit.js';
import { makeInternalCa, startHttpsJwks, type HttpsJwks, type InternalCa } from './helpers/internal-ca.js';
import { spawnNode, type NodeProcess } from './helpers/node-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/secrets.js';
import { waitFor } from './helpers/wait.js';

const REDIS_PASSWORD = 'test-redis-password-0123456789abcdef';
/** The secret values a site creates with `faas-cli secret create` (test values here). */
const SECRET_VALUES: Record<string, string> = { 'hmac-secret': TEST_HMAC_SECRET, 'redis-password': REDIS_PASSWORD, 'audit-signing-key': TEST_AUDIT_KEY, 'audit-intake-key': 'test-audit-intake-key-0123456789abcdef0123', 'basic-auth-password': 'test-gateway-password', 'media-edge-key': 'test-media-edge-key-0123456789abcdef0123456', 'media-kek': 'k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=' };
const ISSUER = 'https://idp.test.internal/realms/pulsevault';
const AUDIENCE = 'pulsevault-test';
const stack = readStack('stack.yml');

const work = mkdtempSync(path.join(tmpdir(), 'pv-prodboot-'));
const processes: NodeProcess[] = [];
let redis: TestRedis;
let jwks: Server;
let jwksUrl: string;
let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
/** The site's identity provider behind its internal CA, for doctor. */
let ca: InternalCa;
let idp: HttpsJwks;

/** A copy of k8s/ whose site block is filled in as a site would (the JWKS on loopback). */
function siteK8s(site: Record<string, string>): string {
  const dir = mkdtempSync(path.join(work, 'k8s-'));
  cpSync('k8s', dir, { recursive: true });
  writeFileSync(path.join(dir, 'site.env'), Object.entries(site).map(([k, v]) => `${k}=${v}\n`).join(''));
  return dir;
}

function secretsDir(names: string[]): string {
  const dir = mkdtempSync(path.join(work, 'secrets-'));
  for (const name of names) {
    expect(SECRET_VALUES[name], `documented secret ${name}`).toBeDefined();
    writeFileSync(path.join(dir, name), `${SECRET_VALUES[name]}\n`); // `echo … | faas-cli secret create` leaves a newline
  }
  return dir;
}

/** Cluster wiring this machine cannot have: Redis' address, the media volume, the CA bundle's mount, the secrets mount, ports. */
function wiring(extra: Record<string, string>): Record<string, string> {
  return { REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redis.port), MEDIA_ROOT: path.join(work, 'media'), NODE_EXTRA_CA_CERTS: path.join(work, 'ca-bundle.pem'), HOST: '127.0.0.1', ...extra };
}

function start(args: string[], env: Record<string, string>): NodeProcess {
  // Nothing from this test process leaks in: PATH only, then what the deployment gives.
  const p = spawnNode(args, { PATH: process.env.PATH, ...env });
  processes.push(p);
  return p;
}

async function untilAnswers(url: string, p: NodeProcess, what: string): Promise<Response> {
  return waitFor(async () => {
    if (p.child.exitCode !== null) throw new Error(`${what} exited with ${p.child.exitCode}:\n${p.output()}`);
    const res = await fetch(url).catch(() => null);
    return res?.ok ? res : null;
  }, 30_000, what);
}

/** `env`: faas-cli's REGISTRY and TAG, as a site sets them for stack.yml's images. */
function doctor(dir: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/scripts/pulsevault.js', 'doctor', dir], { env: { PATH: process.env.PATH, ...env } }, (err, stdout) => resolve({ code: err ? Number(err.code) : 0, stdout }));
  });
}

/** A site's release: its registry for stack.yml (REGISTRY, TAG) and for the images each kustomization runs. */
const RELEASE = { REGISTRY: 'registry.hospital.test', TAG: '1.4.2' };
const KUSTOMIZED_IMAGES: Record<string, string[]> = { 'kustomization.yaml': ['pulsevault-services', 'pulsevault-media-edge'], 'mirror/kustomization.yaml': ['pulsevault-services'] };
function released(dir: string): string {
  for (const [k, images] of Object.entries(KUSTOMIZED_IMAGES)) {
    const file = path.join(dir, k);
    const entries = images.map((name) => `  - name: registry.local:5000/${name}\n    newName: ${RELEASE.REGISTRY}/${name}\n    newTag: "${RELEASE.TAG}"\n`).join('');
    writeFileSync(file, `${readFileSync(file, 'utf8')}\nimages:\n${entries}`);
  }
  return dir;
}

beforeAll(async () => {
  ca = makeInternalCa();
  idp = await startHttpsJwks(ca);
  mkdirSync(path.join(work, 'media'));
  cpSync('k8s/ca-bundle.pem', path.join(work, 'ca-bundle.pem')); // what the pulsevault-ca-bundle ConfigMap mounts
  redis = await startRedis({ password: REDIS_PASSWORD });
  const pair = await generateKeyPair('RS256');
  privateKey = pair.privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  jwks = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
  jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
});

afterAll(async () => {
  for (const p of processes) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => p.exited));
  await redis?.close();
  await new Promise((r) => jwks?.close(r));
  await idp?.close();
  ca?.remove();
  rmSync(work, { recursive: true, force: true });
});

describe('production boot from stack.yml + k8s/ + documented secrets', () => {
  let rendered: Manifest[];
  beforeAll(() => {
    rendered = renderKustomization(
      siteK8s({ AUTH_JWKS_URL: jwksUrl, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' }),
    );
  });

  it('the site block reaches the Ingress hosts and the media volume’s storage class', () => {
    const hosts = rendered.filter((d) => d.kind === 'Ingress').flatMap((i) => [...i.spec.rules.map((r: Manifest) => r.host), ...i.spec.tls.flatMap((t: Manifest) => t.hosts)]);
    expect(hosts.length).toBeGreaterThanOrEqual(10);
    expect(new Set(hosts)).toEqual(new Set(['videos.hospital.test']));
    expect(rendered.find((d) => d.kind === 'PersistentVolumeClaim' && d.metadata.name === 'pulsevault-media')!.spec.storageClassName).toBe('nfs-encrypted');
  });

  // Concurrent: each start mostly waits (Redis, the IdP, readiness); one after another they took 27 s of the suite.
  it.concurrent.each(stack.functions.map((f) => [f.name, f] as const))('function %s starts in production and becomes ready', async (name, fn) => {
    const env = functionEnvironment(fn, rendered);
    expect(env.NODE_ENV).toBe('production');
    const port = await freePort();
    const p = start(['dist/templates/pulsevault-node20/runtime/main.js', `dist/functions/${name}/handler.js`], {
      ...env,
      ...wiring({ PORT: String(port), SECRETS_DIR: secretsDir(fn.secrets), TMPDIR: mkdtempSync(path.join(work, `tmp-${name}-`)) }),
    });
    await untilAnswers(`http://127.0.0.1:${port}/_/ready`, p, `${name} ready`);
    // Connected to Redis with the documented redis-password secret.
    const health = await waitFor(async () => {
      const body = (await (await fetch(`http://127.0.0.1:${port}/_/ready`)).json()) as Record<string, unknown>;
      return body.redis === 'up' ? body : null;
    }, 15_000, `${name} connected to Redis`);
    expect(health).toEqual({ status: 'ok', function: name, redis: 'up' });

    if (name === 'metadata') {
      // Auth is really on, with the site's identity provider: no token 401; its uploader token gets past auth
      // to the listing, read from the (empty) media volume because this site has no PostgreSQL mirror (METADATA_DSN).
      const listing = `http://127.0.0.1:${port}/media/videos`;
      expect((await fetch(listing)).status).toBe(401);
      const token = await new SignJWT({ roles: ['uploader'] })
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .setSubject('clinician-1')
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime('5m')
        .sign(privateKey);
      const listed = await fetch(listing, { headers: { Authorization: `Bearer ${token}` } });
      expect(listed.status, await listed.clone().text()).toBe(200);
      expect(((await listed.clone().json()) as { videos: unknown[] }).videos).toEqual([]);
      expect(p.output()).not.toContain(token);
    }
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });

  it.concurrent.each(['audit-writer', 'queue-connector', 'webhook-sender'])('service %s starts in production from its Deployment', async (name) => {
    const svc = serviceDeployment(rendered, name);
    expect(svc.env.NODE_ENV).toBe('production');
    const port = await freePort();
    const metricsPort = ({ 'audit-writer': 'AUDIT_METRICS_PORT', 'queue-connector': 'QUEUE_CONNECTOR_METRICS_PORT', 'webhook-sender': 'WEBHOOK_METRICS_PORT' } as const)[name]!;
    expect(svc.env[metricsPort]).toBe('8080');
    expect(svc.command[0]).toBe('node');
    // The writer's intake port as its Deployment sets it, moved to a free one here.
    const intake: Record<string, string> = name === 'audit-writer' ? { AUDIT_INTAKE_PORT: String(await freePort()) } : {};
    if (name === 'audit-writer') expect(svc.env.AUDIT_INTAKE_PORT).toBe('8081');
    const p = start(svc.command.slice(1), { ...svc.env, ...wiring({ [metricsPort]: String(port), SECRETS_DIR: secretsDir(svc.secrets), ...intake }) });
    await untilAnswers(`http://127.0.0.1:${port}/metrics`, p, `${name} metrics`);
    if (name === 'audit-writer') {
      await untilAuditWriterReady(`redis://:${REDIS_PASSWORD}@127.0.0.1:${redis.port}`, () => (p.child.exitCode !== null ? p.output() : null));
      // Its readiness probe's port: the intake greets once the writer holds the lease.
      expect(await greeting(Number(intake.AUDIT_INTAKE_PORT))).toMatch(/^PVAUDIT\/1 [0-9a-f]{64}$/);
    }
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });
});

describe('pulsevault doctor', () => {
  it('names every site setting still an example and every placeholder image in the checked-in k8s/ and stack.yml, and exits 1', async () => {
    const { code, stdout } = await doctor('k8s');
    expect(code).toBe(1);
    for (const key of ['AUTH_JWKS_URL', 'AUTH_ISSUER', 'PUBLIC_URL', 'PUBLIC_HOST', 'MEDIA_STORAGE_CLASS']) expect(stdout).toMatch(new RegExp(`^problem: ${key} is still the example value`, 'm'));
    expect(stdout).toContain('problem: Deployment queue-connector: image registry.local:5000/pulsevault-services:latest is in the placeholder registry and has no release tag');
    expect(stdout).toContain('problem: CronJob pulsevault-reindex: image registry.local:5000/pulsevault-services:latest');
    expect(stdout).toContain('problem: Deployment media-edge: image registry.local:5000/pulsevault-media-edge:latest is in the placeholder registry');
    for (const fn of stack.functions) expect(stdout).toContain(`problem: stack.yml function ${fn.name}: image registry.local:5000/pulsevault-${fn.name}:latest`);
    expect(stdout).toMatch(/^ok: \d+ objects of k8s, k8s\/keda, k8s\/mirror, k8s\/monitoring(, k8s\/[a-z/-]+)* against the API server's validation rules/m);
    expect(stdout).toMatch(/^not checked: the identity provider's JWKS/m);
    expect(stdout).not.toMatch(/starts/);
  });

  it("refuses an Ingress the API server would refuse, with the API server's words", async () => {
    const dir = released(siteK8s({ AUTH_JWKS_URL: idp.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' }));
    const ingress = path.join(dir, 'ingress.yaml');
    writeFileSync(ingress, readFileSync(ingress, 'utf8').replace("path: '/uploads/finalize$'", () => "path: '(/uploads/finalize)$'"));
    const { code, stdout } = await doctor(dir, RELEASE);
    expect(stdout).toContain('problem: Ingress openfaas-fn/pulsevault-finalize: spec.rules[0].http.paths[0].path: Invalid value: "(/uploads/finalize)$": must be an absolute path');
    expect(code).toBe(1);
  });

  it('names an identity provider whose certificate the CA bundle does not vouch for, with the TLS verdict', async () => {
    const dir = released(siteK8s({ AUTH_JWKS_URL: idp.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' }));
    const { code, stdout } = await doctor(dir, RELEASE);
    expect(stdout).toContain(`problem: AUTH_JWKS_URL (${new URL(idp.url).origin}) cannot be fetched from here: SELF_SIGNED_CERT_IN_CHAIN: self-signed certificate in certificate chain — add the CA that issued its certificate to k8s/ca-bundle.pem`);
    expect(code).toBe(1);
  });

  it('names the functions that would refuse to start without an identity provider', async () => {
    const { code, stdout } = await doctor(siteK8s({ AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' }));
    expect(code).toBe(1);
    expect(stdout).toMatch(/^problem: AUTH_JWKS_URL is not set/m);
    for (const fn of ['tus-upload', 'finalize', 'sign', 'metadata']) expect(stdout).toContain(`problem: function ${fn}: invalid configuration: AUTH_JWKS_URL or AUTH_JWT_SECRET is required when NODE_ENV=production`);
  });

  it('names the workloads that would start with direct audit submission and no audit-intake-key', async () => {
    const dir = siteK8s({ AUTH_JWKS_URL: 'https://login.hospital.test/jwks', AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' });
    const manifest = path.join(dir, 'audit-writer.yaml');
    writeFileSync(manifest, readFileSync(manifest, 'utf8').replace(/^ {14}- secret:\n {18}name: audit-intake-key\n/m, ''));
    const { code, stdout } = await doctor(released(dir), RELEASE);
    expect(code).toBe(1);
    expect(stdout).toContain('problem: service audit-writer: invalid configuration: AUDIT_INTAKE_KEY is required in production');
  });

  it('passes a complete site whose IdP its CA bundle trusts, and lists every secret referenced, TLS and pull secret included', async () => {
    const dir = released(siteK8s({ AUTH_JWKS_URL: idp.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted' }));
    writeFileSync(path.join(dir, 'ca-bundle.pem'), `${readFileSync(path.join(dir, 'ca-bundle.pem'), 'utf8')}${ca.caPem}`);
    const { code, stdout } = await doctor(dir, RELEASE);
    expect(stdout).not.toMatch(/^(problem|FAILED|not checked)/m);
    expect(stdout).toContain('ok: the CA bundle (ConfigMap pulsevault-ca-bundle): 1 certificate(s)');
    expect(stdout).toMatch(/^ok: the identity provider's JWKS at AUTH_JWKS_URL, fetched from here/m);
    const listed = [...stdout.matchAll(/^ {2}([a-z0-9-]+) \((.+)\)$/gm)].map((m) => [m[1], m[2]]);
    expect(listed.map(([name]) => name)).toEqual(['audit-intake-key', 'audit-signing-key', 'basic-auth-password', 'hmac-secret', 'media-edge-key', 'media-kek', 'metadata-dsn', 'pulsevault-registry', 'pulsevault-tls', 'redis-password', 'redis-sentinel-password']);
    expect(Object.fromEntries(listed)['pulsevault-tls']).toMatch(/^Ingress pulsevault-/);
    expect(code).toBe(0);
  });

  it('with REDIS_SENTINELS, names every workload without the Sentinel password and the single Redis still deployed', async () => {
    const { code, stdout } = await doctor(
      siteK8s({
        AUTH_JWKS_URL: 'https://login.hospital.test/jwks', AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, PUBLIC_URL: 'https://videos.hospital.test', PUBLIC_HOST: 'videos.hospital.test', MEDIA_STORAGE_CLASS: 'nfs-encrypted',
        REDIS_SENTINELS: 'redis-ha-0.redis-ha.openfaas-fn.svc.cluster.local:26379,redis-ha-1.redis-ha.openfaas-fn.svc.cluster.local:26379', REDIS_SENTINEL_NAME: 'pulsevault',
      }),
    );
    expect(code).toBe(1);
    for (const who of ['function sign', 'function transcoder', 'service audit-writer']) expect(stdout).toContain(`problem: ${who}: does not mount the secret redis-sentinel-password`);
    expect(stdout).toMatch(/^problem: the single Redis \(k8s\/redis.yaml\) is still deployed beside REDIS_SENTINELS/m);
  });
});

/** The first line a TCP server sends (retried until it accepts connections). */
async function greeting(port: number): Promise<string> {
  let line = '';
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        line = '';
        const socket = connect(port, '127.0.0.1');
        socket.setEncoding('utf8');
        socket.on('data', (text: string) => {
          line += text;
          if (line.includes('\n')) {
            socket.destroy();
            resolve(true);
          }
        });
        socket.on('error', () => resolve(false));
      }),
    10_000,
    'the audit intake to greet',
  );
  return line.split('\n')[0]!;
}
