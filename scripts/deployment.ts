/**
 * What a deployment gives each PulseVault workload, derived only from the files a site
 * applies: `kubectl kustomize k8s/` (with the site block k8s/site.env), stack.yml and the
 * function image's ENV. `pulsevault doctor` checks it before anything is deployed; the
 * production boot test starts every function from it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { StackFunction } from '../shared/platform/openfaas-stack.js';

export type Manifest = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The function template faas-cli builds every function from. */
export const FUNCTION_DOCKERFILE = 'templates/pulsevault-node20/Dockerfile';
export const SITE_CONFIGMAP = 'pulsevault-site';
/** The site block: what only a site can supply (k8s/site.env). */
export const SITE_KEYS = ['AUTH_JWKS_URL', 'AUTH_ISSUER', 'AUTH_AUDIENCE', 'PUBLIC_URL', 'PUBLIC_HOST', 'MEDIA_STORAGE_CLASS'] as const;
/** Where OpenFaaS (and our service manifests) mount secrets. */
export const SECRETS_MOUNT = '/var/openfaas/secrets';

/** The manifests `kubectl apply -k dir` would apply (kubectl's built-in kustomize; no cluster needed). */
export function renderKustomization(dir: string): Manifest[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return parseAllDocuments(out)
    .map((d) => d.toJS() as Manifest | null)
    .filter((d): d is Manifest => d !== null);
}

function configMapData(rendered: Manifest[], name: string, namespace: string): Record<string, string> {
  const cm = rendered.find((d) => d.kind === 'ConfigMap' && d.metadata?.name === name && (d.metadata?.namespace ?? namespace) === namespace);
  return (cm?.data as Record<string, string> | undefined) ?? {};
}

/** Environment from `envFrom` ConfigMap references, in order (a later one wins, as in Kubernetes). */
function fromEnvFrom(envFrom: Manifest[] | undefined, rendered: Manifest[], namespace: string): Record<string, string> {
  return Object.assign({}, ...(envFrom ?? []).filter((e) => e.configMapRef).map((e) => configMapData(rendered, e.configMapRef.name as string, namespace)));
}

/** The last stage's ENV of a Dockerfile (`ENV a=b \` continuation lines, values optionally double-quoted). */
export function imageEnvironment(dockerfile = FUNCTION_DOCKERFILE): Record<string, string> {
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n/g, ' ');
  const lastStage = text.slice(text.lastIndexOf('\nFROM '));
  const env: Record<string, string> = {};
  for (const [, body] of lastStage.matchAll(/^ENV (.+)$/gm)) {
    for (const [, key, quoted, bare] of body!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"]*)"|(\S*))/g)) env[key!] = quoted ?? bare ?? '';
  }
  return env;
}

/**
 * A function container's environment as Kubernetes assembles it: the image's ENV, then the
 * ConfigMaps the Kyverno policy injects with envFrom, then stack.yml's `environment`
 * (faas-netes sets it as `env`, which wins over `envFrom`).
 */
export function functionEnvironment(fn: StackFunction, rendered: Manifest[], image = imageEnvironment()): Record<string, string> {
  const policy = rendered.find((d) => d.kind === 'ClusterPolicy' && d.metadata?.name === 'pulsevault-media-volume');
  const containers = ((policy?.spec?.rules ?? []) as Manifest[]).flatMap((r) => (r.mutate?.patchStrategicMerge?.spec?.template?.spec?.containers ?? []) as Manifest[]);
  const envFrom = containers.flatMap((c) => (c.envFrom ?? []) as Manifest[]);
  return { ...image, ...fromEnvFrom(envFrom, rendered, 'openfaas-fn'), ...fn.environment };
}

export interface ServiceDeployment {
  name: string;
  command: string[];
  env: Record<string, string>;
  /** Secret names projected into /var/openfaas/secrets. */
  secrets: string[];
}

/** A Deployment's (first container's) command, environment and mounted secrets. */
export function serviceDeployment(rendered: Manifest[], name: string): ServiceDeployment {
  const d = rendered.find((m) => m.kind === 'Deployment' && m.metadata?.name === name);
  if (!d) throw new Error(`no Deployment ${name} in the rendered manifests`);
  const pod = d.spec.template.spec as Manifest;
  const c = pod.containers[0] as Manifest;
  const plain = ((c.env ?? []) as Manifest[]).filter((e) => typeof e.value === 'string').map((e) => [e.name as string, e.value as string]);
  const mount = ((c.volumeMounts ?? []) as Manifest[]).find((m) => m.mountPath === SECRETS_MOUNT);
  const volume = ((pod.volumes ?? []) as Manifest[]).find((v) => v.name === mount?.name);
  const secrets = ((volume?.projected?.sources ?? []) as Manifest[]).flatMap((s) => (s.secret ? [s.secret.name as string] : []));
  return { name, command: c.command as string[], env: { ...fromEnvFrom(c.envFrom, rendered, d.metadata.namespace as string), ...Object.fromEntries(plain) }, secrets };
}

/** Reserved example names (RFC 2606) mark a value the site has not replaced yet. */
const PLACEHOLDER = /(^|[^a-z0-9])example([^a-z0-9]|$)/i;

/** What is missing or unfinished in the site block, one line each, naming the key. */
export function siteProblems(rendered: Manifest[]): string[] {
  const site = rendered.find((d) => d.kind === 'ConfigMap' && d.metadata?.name === SITE_CONFIGMAP);
  if (!site) return [`ConfigMap ${SITE_CONFIGMAP} is missing: k8s/kustomization.yaml must generate it from site.env`];
  const data = (site.data ?? {}) as Record<string, string>;
  const problems: string[] = [];
  for (const key of SITE_KEYS) {
    const value = (data[key] ?? '').trim();
    if (value === '') problems.push(`${key} is not set (k8s/site.env)`);
    else if (PLACEHOLDER.test(value)) problems.push(`${key} is still the example value "${value}" (k8s/site.env)`);
  }
  for (const key of ['AUTH_JWKS_URL', 'PUBLIC_URL'] as const) {
    const value = data[key] ?? '';
    if (value && !(URL.canParse(value) && new URL(value).protocol === 'https:')) problems.push(`${key} must be an https:// URL (got "${value}")`);
  }
  if (data.PUBLIC_URL && URL.canParse(data.PUBLIC_URL) && data.PUBLIC_HOST && new URL(data.PUBLIC_URL).host !== data.PUBLIC_HOST) {
    problems.push(`PUBLIC_HOST "${data.PUBLIC_HOST}" is not the host of PUBLIC_URL "${data.PUBLIC_URL}"`);
  }
  return problems;
}
