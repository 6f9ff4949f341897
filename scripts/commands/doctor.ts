/**
 * `pulsevault doctor [k8s-dir] [--stack stack.yml]`: the pre-deploy check, without a cluster.
 * Renders every kustomization under k8s-dir as `kubectl apply -k` would and checks, each in a
 * function of its own: the objects against the API server's validation rules (what a cluster
 * refuses although every schema passes), the images (no placeholder registry, no `latest`), the
 * site block, the CA bundle, each function's and service's configuration as it would load it
 * with NODE_ENV=production (nothing is started), and the identity provider's JWKS, fetched
 * from here trusting exactly what the pods trust (public roots + k8s/ca-bundle.pem). Then it
 * lists every secret the manifests and stack.yml reference, which only the cluster can hold.
 * Exit 0 when ready to deploy, 1 with one line per problem otherwise.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rootCertificates } from 'node:tls';
import { createAuthenticator } from '../../shared/auth/jwt.js';
import { ConfigError, describeVariables, loadConfig } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { readStack, type Stack } from '../../shared/platform/openfaas-stack.js';
import { failureCause } from '../../shared/platform/outbound.js';
import { apiServerProblems } from '../api-server-rules.js';
import { functionEnvironment, renderKustomization, serviceDeployment, SITE_CONFIGMAP, siteProblems, type Manifest } from '../deployment.js';

export const summary = 'pre-deploy check: API-server rules, images, site block, CA bundle, configuration, the IdP; lists the secrets to create';

/** The long-running services k8s/ deploys beside the functions. */
const SERVICES = ['queue-connector', 'audit-writer'];
const CA_BUNDLE_CONFIGMAP = 'pulsevault-ca-bundle';
/** The registry and tag the checked-in files name until a site points them at its own. */
const PLACEHOLDER_REGISTRY = 'registry.local:5000/';
const IDP_TIMEOUT_MS = 10_000;
const MAX_JWKS_BYTES = 1024 * 1024;

interface Rendered {
  folder: string;
  docs: Manifest[];
}

export async function run(args: string[]): Promise<number> {
  const stackAt = args.indexOf('--stack');
  const stackFile = stackAt >= 0 ? args[stackAt + 1] : 'stack.yml';
  const positional = stackAt >= 0 ? args.filter((_, i) => i !== stackAt && i !== stackAt + 1) : args;
  if (!stackFile || positional.length > 1 || positional.some((a) => a.startsWith('-'))) {
    process.stderr.write('usage: pulsevault doctor [k8s-dir] [--stack stack.yml]\n');
    return 64;
  }
  const dir = positional[0] ?? 'k8s';
  let folders: Rendered[];
  try {
    folders = kustomizationFolders(dir).map((folder) => ({ folder, docs: renderKustomization(folder) }));
  } catch (err) {
    process.stderr.write(`cannot render ${dir} with kubectl kustomize: ${(err as Error).message.split('\n')[0]}\n`);
    return 1;
  }
  const stack = readStack(stackFile);
  const main = folders.find((f) => f.folder === dir)?.docs ?? [];
  const all = folders.flatMap((f) => f.docs);
  const site = (main.find((d) => d.kind === 'ConfigMap' && d.metadata?.name === SITE_CONFIGMAP)?.data ?? {}) as Record<string, string>;
  const bundle = caBundle(main);

  const siteBlock = siteProblems(main);
  const checks: { checked: string; problems: string[] | null }[] = [
    { checked: `${all.length} objects of ${folders.map((f) => f.folder).join(', ')} against the API server's validation rules (names, labels, selectors, Ingress paths and backends)`, problems: apiServerProblems(all) },
    { checked: 'the images of the manifests and stack.yml (no placeholder registry, no :latest)', problems: imageProblems(all, stack) },
    { checked: 'the site block (k8s/site.env)', problems: siteBlock },
    { checked: `the CA bundle (ConfigMap ${CA_BUNDLE_CONFIGMAP}): ${bundle.certificates.length} certificate(s)`, problems: bundle.problems },
    { checked: 'each function and service loads its configuration with NODE_ENV=production (loaded here, nothing started)', problems: workloadProblems(main, stack) },
    { checked: 'the Redis Sentinel settings: the same REDIS_SENTINELS/REDIS_SENTINEL_NAME and secret redis-sentinel-password in every process, no single Redis beside them', problems: sentinelProblems(main, stack) },
    {
      checked: `the identity provider's JWKS at AUTH_JWKS_URL, fetched from here trusting the public roots and the CA bundle`,
      // Not fetched while the site block has no usable URL (that check names it).
      problems: siteBlock.some((p) => p.startsWith('AUTH_JWKS_URL')) ? null : await idpProblems(site.AUTH_JWKS_URL!, bundle.certificates),
    },
  ];
  const problems = checks.flatMap((c) => c.problems ?? []);
  const report = checks.map((c) => `${c.problems === null ? 'not checked' : c.problems.length === 0 ? 'ok' : 'FAILED'}: ${c.checked}`);
  const secrets = referencedSecrets(all, stack);
  const secretLines = [...secrets].sort(([a], [b]) => a.localeCompare(b)).map(([name, users]) => `  ${name} (${[...users].join(', ')})`);
  process.stdout.write(`${report.join('\n')}\n`);
  if (problems.length > 0) {
    process.stdout.write(`${problems.map((p) => `problem: ${p}`).join('\n')}\n${problems.length} problem(s): fix them before deploying.\n`);
    return 1;
  }
  process.stdout.write(`Secrets the manifests and stack.yml reference, to create before deploying (a cluster holds them; not checked here):\n${secretLines.join('\n')}\n`);
  return 0;
}

/** `dir` and every folder below it with a kustomization.yaml (optional components such as k8s/keda included). */
function kustomizationFolders(dir: string): string[] {
  const below = readdirSync(dir)
    .map((f) => path.join(dir, f))
    .filter((p) => statSync(p).isDirectory())
    .flatMap(kustomizationFolders);
  return existsSync(path.join(dir, 'kustomization.yaml')) ? [dir, ...below] : below;
}

/** faas-cli expands `${VAR}` and `${VAR:-default}` in stack.yml from the environment. */
function expand(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => env[name] || fallback || '');
}

function podSpecs(doc: Manifest): Manifest[] {
  const spec = doc.kind === 'CronJob' ? doc.spec?.jobTemplate?.spec?.template?.spec : doc.spec?.template?.spec;
  return spec ? [spec as Manifest] : [];
}

/** Images a site has not pointed at its registry and a release yet. */
export function imageProblems(docs: Manifest[], stack: Stack, env: NodeJS.ProcessEnv = process.env): string[] {
  const images = [
    ...docs.flatMap((d) => podSpecs(d).flatMap((s) => [...(s.initContainers ?? []), ...(s.containers ?? [])].map((c: Manifest) => ({ who: `${d.kind} ${d.metadata.name}`, image: c.image as string })))),
    ...stack.functions.map((f) => ({ who: `stack.yml function ${f.name}`, image: expand(f.image, env) })),
  ];
  return images.flatMap(({ who, image }) => {
    const tag = /:([^/:@]+)$/.exec(image)?.[1];
    const why = [
      ...(image.startsWith(PLACEHOLDER_REGISTRY) ? ['is in the placeholder registry'] : []),
      ...(!image.includes('@') && (tag === undefined || tag === 'latest') ? ['has no release tag (a rollout could not say what it runs)'] : []),
    ];
    const fix = who.startsWith('stack.yml') ? 'set REGISTRY and TAG for faas-cli' : 'add an images: entry to its kustomization.yaml';
    return why.length > 0 ? [`${who}: image ${image} ${why.join(' and ')}: ${fix}`] : [];
  });
}

/** Every Secret a pod, an Ingress, a KEDA TriggerAuthentication or stack.yml names, with who names it. */
export function referencedSecrets(docs: Manifest[], stack: Stack): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  const add = (name: unknown, who: string) => {
    if (typeof name !== 'string' || name === '') return;
    if (!found.has(name)) found.set(name, new Set());
    found.get(name)!.add(who);
  };
  const walk = (node: unknown, who: string): void => {
    if (Array.isArray(node)) return node.forEach((n) => walk(n, who));
    if (!node || typeof node !== 'object') return;
    const o = node as Manifest;
    add(o.secretName, who); // volumes' secret, Ingress tls
    for (const ref of [o.secretRef, o.secretKeyRef, o.secret]) if (ref && typeof ref === 'object') add(ref.name, who); // envFrom, env, projected sources
    for (const ref of [...(o.imagePullSecrets ?? []), ...(o.secretTargetRef ?? [])] as Manifest[]) add(ref.name, who);
    Object.values(o).forEach((v) => walk(v, who));
  };
  // ConfigMap data is text, the Kyverno policy a patch: neither references a Secret itself.
  for (const d of docs) if (d.kind !== 'ConfigMap' && d.kind !== 'ClusterPolicy') walk(d, `${d.kind} ${d.metadata?.name}`);
  for (const fn of stack.functions) for (const s of fn.secrets) add(s, `function ${fn.name}`);
  return found;
}

/** The PEM certificates of the CA bundle ConfigMap, each parsed as Node will when it reads NODE_EXTRA_CA_CERTS. */
function caBundle(docs: Manifest[]): { certificates: string[]; problems: string[] } {
  const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata?.name === CA_BUNDLE_CONFIGMAP);
  if (!cm) return { certificates: [], problems: [`ConfigMap ${CA_BUNDLE_CONFIGMAP} is missing: k8s/kustomization.yaml must generate it from ca-bundle.pem`] };
  const text = Object.values((cm.data ?? {}) as Record<string, string>).join('\n');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const problems: string[] = [];
  const certificates = blocks.filter((pem, i) => {
    try {
      const cert = new X509Certificate(pem);
      if (!cert.ca) problems.push(`ca-bundle.pem certificate ${i + 1} (${cert.subject.replace(/\n/g, ', ')}) is not a CA certificate`);
      if (Date.parse(cert.validTo) < Date.now()) problems.push(`ca-bundle.pem certificate ${i + 1} (${cert.subject.replace(/\n/g, ', ')}) expired ${cert.validTo}`);
      return true;
    } catch (err) {
      problems.push(`ca-bundle.pem certificate ${i + 1} does not parse: ${(err as Error).message}`);
      return false;
    }
  });
  if (/-----BEGIN (?!CERTIFICATE-----)/.test(text)) problems.push('ca-bundle.pem holds something other than certificates (a private key?): only CA certificates belong there');
  return { certificates, problems };
}

/** GET the JWKS as a pod would: TLS verified against the public roots plus the bundle. */
async function idpProblems(jwksUrl: string, bundle: string[]): Promise<string[]> {
  const origin = new URL(jwksUrl).origin;
  try {
    const keys = await new Promise<number>((resolve, reject) => {
      const req = get(jwksUrl, { ca: [...rootCertificates, ...bundle], timeout: IDP_TIMEOUT_MS }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (body.length < MAX_JWKS_BYTES) body += d;
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`answered HTTP ${res.statusCode}`));
          try {
            const parsed = JSON.parse(body) as { keys?: unknown };
            resolve(Array.isArray(parsed.keys) ? parsed.keys.length : 0);
          } catch {
            reject(new Error('answered something that is not JSON'));
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${IDP_TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
    });
    return keys > 0 ? [] : [`AUTH_JWKS_URL (${origin}) answered a JWKS without keys`];
  } catch (err) {
    const cause = failureCause(err);
    const hint = /certificate|self.signed|UNABLE_TO/i.test(cause) ? ' — add the CA that issued its certificate to k8s/ca-bundle.pem' : '';
    return [`AUTH_JWKS_URL (${origin}) cannot be fetched from here: ${cause}${hint}`];
  }
}

/** Placeholder values of secrets with a format (a KEK is `<id>:<32 bytes base64>`); any other is 48 bytes. */
const PLACEHOLDERS: Record<string, string> = { 'media-kek': `placeholder:${'A'.repeat(43)}=`, 'media-kek-previous': `placeholder:${'A'.repeat(43)}=` };

/** Each workload's configuration loaded as it will be in the cluster, with placeholder secret files. */
function workloadProblems(rendered: Manifest[], stack: Stack): string[] {
  const quiet = createLogger('doctor', 'error');
  const secretFiles = new Set(describeVariables().flatMap((v) => (v.secretFile ? [v.secretFile] : [])));
  const problems: string[] = [];
  const check = (who: string, env: Record<string, string>, secrets: string[], needsAuth: boolean) => {
    for (const s of secrets) if (!secretFiles.has(s)) problems.push(`${who}: mounts secret ${s}, which no configuration variable reads`);
    if (env.NODE_ENV !== 'production') problems.push(`${who}: NODE_ENV is "${env.NODE_ENV ?? ''}", not production`);
    // Secret values are the site's; only their presence matters here.
    const secretsDir = mkdtempSync(path.join(tmpdir(), 'pv-doctor-'));
    try {
      for (const s of secrets) writeFileSync(path.join(secretsDir, s), PLACEHOLDERS[s] ?? 'x'.repeat(48));
      const config = loadConfig(env, { secretsDir, require: [] });
      if (needsAuth) createAuthenticator(config, quiet);
    } catch (err) {
      problems.push(`${who}: ${err instanceof ConfigError ? err.message : String(err)}`);
    } finally {
      rmSync(secretsDir, { recursive: true, force: true });
    }
  };
  for (const fn of stack.functions) check(`function ${fn.name}`, functionEnvironment(fn, rendered), fn.secrets, true);
  for (const name of SERVICES) {
    const svc = serviceDeployment(rendered, name);
    check(`service ${name}`, svc.env, svc.secrets, false);
  }
  return problems;
}

/**
 * Redis through Sentinel (docs/deploy.md "Redis high availability (Sentinel)"): every workload names
 * the same Sentinels and master, can read the Sentinels' password, and the single Redis is gone.
 */
function sentinelProblems(rendered: Manifest[], stack: ReturnType<typeof readStack>): string[] {
  const workloads = [
    ...stack.functions.map((fn) => ({ who: `function ${fn.name}`, env: functionEnvironment(fn, rendered), secrets: fn.secrets })),
    ...SERVICES.map((name) => ({ who: `service ${name}`, ...serviceDeployment(rendered, name) })),
  ];
  const setting = (env: Record<string, string>) => `${env.REDIS_SENTINELS ?? ''} ${env.REDIS_SENTINEL_NAME ?? ''}`.trim();
  const through = workloads.filter((w) => (w.env.REDIS_SENTINELS ?? '') !== '');
  if (through.length === 0) return [];
  const problems: string[] = [];
  const expected = setting(through[0]!.env);
  for (const w of workloads) {
    if (setting(w.env) !== expected) problems.push(`${w.who}: REDIS_SENTINELS/REDIS_SENTINEL_NAME differ from ${through[0]!.who}'s (every process must use the same Redis)`);
    if (!w.secrets.includes('redis-sentinel-password')) problems.push(`${w.who}: does not mount the secret redis-sentinel-password the Sentinels require`);
  }
  if (rendered.some((m) => m.kind === 'StatefulSet' && m.metadata?.name === 'redis')) {
    problems.push('the single Redis (k8s/redis.yaml) is still deployed beside REDIS_SENTINELS: remove it from k8s/kustomization.yaml');
  }
  return problems;
}
