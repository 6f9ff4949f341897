/**
 * Static checks of k8s/ and stack.yml, without a cluster: every YAML parses, the
 * manifests validate against the Kubernetes OpenAPI schemas (kubernetes-models)
 * and, for unknown fields, against its TypeScript types (tsc's excess-property
 * check), the Kyverno policy really mounts the volume into a Deployment shaped
 * like faas-netes makes them, pod security and NetworkPolicies hold, the Ingress
 * routes exactly like services/gateway/routes.ts, and the timeouts follow docs/deploy.md "Timeouts".
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { describeVariables } from '../shared/platform/config.js';
import { FUNCTIONS, matchPublicRoute, PUBLIC_ROUTES } from '../services/gateway/routes.js';
import { edgeKeyInclude, K8S_MEDIA_EDGE, mediaEdgeConfig } from '../services/media-edge/nginx-config.js';
import { EDGE_ONLY_HEADERS } from '../shared/delivery/edge.js';
import { tmpdir } from 'node:os';
import { readStack, subscribers } from '../shared/platform/openfaas-stack.js';
import { TRANSCODE_STREAM } from '../shared/transcode/queue.js';
import { apiServerProblems } from '../scripts/api-server-rules.js';
import { renderKustomization } from '../scripts/deployment.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const K8S = 'k8s';
const stack = readStack('stack.yml');
const variables = describeVariables();
const configNames = new Set<string>(variables.map((v) => v.name));
const secretFiles = new Set(variables.flatMap((v) => (v.secretFile ? [v.secretFile] : [])));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function loadDocs(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  for (const d of docs) expect(d.errors.map((e) => e.message), file).toEqual([]);
  return docs.map((d) => d.toJS() as Obj).filter((d) => d !== null);
}

const yamlFiles = walk(K8S).filter((f) => /\.ya?ml$/.test(f));
const kustomizations = yamlFiles.filter((f) => path.basename(f) === 'kustomization.yaml');
/** Files the kustomizations name as resources. */
const manifestFiles = kustomizations.flatMap((k) => ((loadDocs(k)[0]!.resources as string[] | undefined) ?? []).map((r) => path.join(path.dirname(k), r)));
/** Manifests = what `kubectl apply -k <folder>` applies, rendered by kubectl's kustomize for every folder (generators, replacements included). */
const manifests = kustomizations.flatMap((k) => renderKustomization(path.dirname(k)).map((doc) => ({ file: k, doc })));
const byKind = (kind: string) => manifests.filter((m) => m.doc.kind === kind).map((m) => m.doc);
const named = (kind: string, name: string) => {
  const found = byKind(kind).find((d) => d.metadata.name === name);
  expect(found, `${kind} ${name}`).toBeDefined();
  return found!;
};

/** Pod template of a workload (Deployment, StatefulSet, CronJob). */
const podTemplate = (w: Obj): Obj => (w.kind === 'CronJob' ? w.spec.jobTemplate.spec.template : w.spec.template);
const workloads = manifests.filter((m) => ['Deployment', 'StatefulSet', 'CronJob'].includes(m.doc.kind)).map((m) => m.doc);
const configMap = named('ConfigMap', 'pulsevault-config');
const siteConfig = named('ConfigMap', 'pulsevault-site');
const MEDIA_ROOT = configMap.data.MEDIA_ROOT as string;
const pvc = named('PersistentVolumeClaim', 'pulsevault-media');
const policy = named('ClusterPolicy', 'pulsevault-media-volume');

/** kubernetes-models module per apiVersion (core and the groups we use, plus KEDA). */
function modelModule(apiVersion: string): string | null {
  if (apiVersion.startsWith('keda.sh/')) return `@kubernetes-models/keda/${apiVersion}`;
  if (apiVersion.startsWith('kyverno.io/')) return null; // no published schema package: checked structurally below
  return `kubernetes-models/${apiVersion}`;
}

describe('k8s/ files', () => {
  it('every YAML file parses, every file is applied or referenced', () => {
    expect(yamlFiles.length).toBeGreaterThan(10);
    for (const f of yamlFiles) loadDocs(f);
    const generated = kustomizations.flatMap((k) =>
      ((loadDocs(k)[0]!.configMapGenerator as Obj[] | undefined) ?? []).flatMap((g) => ((g.files ?? []) as string[]).map((f) => path.join(path.dirname(k), f.split('=').pop()!))),
    );
    const helmValues = [path.join(K8S, 'openfaas-values.yaml'), path.join(K8S, 'ingress-nginx-values.yaml')];
    const siteBlock = path.join(K8S, 'site.env');
    const ruleTests = [path.join(K8S, 'monitoring/alert-rules.test.yml')];
    for (const f of walk(K8S)) {
      const known = [...manifestFiles, ...kustomizations, ...generated, ...helmValues, ...ruleTests, siteBlock, path.join(K8S, 'monitoring/pending-metrics.txt')];
      expect(known, `${f} is neither applied nor referenced`).toContain(f);
    }
    for (const f of [...manifestFiles, ...generated]) expect(existsSync(f), f).toBe(true);
  });

  it('manifests validate against the Kubernetes schemas', async () => {
    let validated = 0;
    for (const { file, doc } of manifests) {
      const mod = modelModule(doc.apiVersion);
      if (!mod) continue;
      const models = (await import(mod)) as Record<string, new (d: Obj) => { validate(): void }>;
      const Model = models[doc.kind];
      expect(Model, `${file}: no schema for ${doc.apiVersion} ${doc.kind}`).toBeDefined();
      expect(() => new Model!(doc).validate(), `${file}: ${doc.kind} ${doc.metadata?.name}`).not.toThrow();
      validated++;
    }
    expect(validated).toBe(manifests.length - byKind('ClusterPolicy').length);
  });

  it('manifests name no field the Kubernetes types lack (typos are not silently ignored)', () => {
    // The schemas allow unknown fields (as the API server's non-strict decoding does); the
    // TypeScript types of the same models do not: assign each manifest to its type and let tsc judge.
    const dir = mkdtempSync(path.join('test', '.k8s-strict-'));
    try {
      const lines: string[] = [];
      manifests.forEach(({ doc }, i) => {
        const mod = modelModule(doc.apiVersion);
        if (mod) lines.push(`import type { I${doc.kind} as T${i} } from '${mod}';`, `export const m${i}: T${i} = ${JSON.stringify(doc)};`);
      });
      writeFileSync(path.join(dir, 'manifests.ts'), `${lines.join('\n')}\n`);
      let output = '';
      try {
        execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', path.join(dir, 'manifests.ts')], { encoding: 'utf8' });
      } catch (err) {
        output = (err as { stdout: string }).stdout;
      }
      expect(output).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the API server's own validation (scripts/api-server-rules.ts)", () => {
  it.each(kustomizations.map((k) => [path.dirname(k)]))('every object `kubectl apply -k %s` sends keeps the rules schemas cannot express', (dir) => {
    const rendered = manifests.filter((m) => path.dirname(m.file) === dir).map((m) => m.doc);
    expect(rendered.length).toBeGreaterThan(0);
    expect(apiServerProblems(rendered)).toEqual([]);
  });

  it('every Ingress path, in every folder, is absolute (no path an ImplementationSpecific rule would refuse)', () => {
    const paths = byKind('Ingress').flatMap((i) => (i.spec.rules as Obj[]).flatMap((r) => (r.http.paths as Obj[]).map((p) => p.path as string)));
    expect(paths.length).toBeGreaterThanOrEqual(PUBLIC_ROUTES.length);
    for (const p of paths) expect(p, p).toMatch(/^\//);
  });
});

describe('the media volume reaches the functions (Kyverno)', () => {
  /** A Deployment as faas-netes builds it from a stack.yml function (pkg/handlers/deploy.go, secrets and read-only root). */
  function faasNetesDeployment(fn: (typeof stack.functions)[number]): Obj {
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: fn.name, namespace: 'openfaas-fn', labels: { faas_function: fn.name } },
      spec: {
        replicas: Number(fn.labels['com.openfaas.scale.min'] ?? 1),
        selector: { matchLabels: { faas_function: fn.name } },
        template: {
          metadata: { name: fn.name, labels: { faas_function: fn.name, ...fn.labels }, annotations: fn.annotations },
          spec: {
            containers: [
              {
                name: fn.name,
                image: fn.image,
                ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
                env: Object.entries(fn.environment).map(([name, value]) => ({ name, value })),
                securityContext: { readOnlyRootFilesystem: true },
                volumeMounts: [
                  { name: 'temp', mountPath: '/tmp' },
                  { name: `${fn.name}-projected-secrets`, mountPath: '/var/openfaas/secrets', readOnly: true },
                ],
              },
            ],
            volumes: [
              { name: 'temp', emptyDir: {} },
              { name: `${fn.name}-projected-secrets`, projected: { sources: fn.secrets.map((s) => ({ secret: { name: s } })) } },
            ],
            restartPolicy: 'Always',
            dnsPolicy: 'ClusterFirst',
          },
        },
      },
    };
  }

  /** Kyverno's patchStrategicMerge as our policy uses it: maps merge, lists of named items merge by name, `(name): "*"` applies to every item. */
  function strategicMerge(target: unknown, patch: unknown): unknown {
    if (Array.isArray(patch)) {
      const list = Array.isArray(target) ? [...(target as Obj[])] : [];
      if (!patch.every((p) => p && typeof p === 'object' && ('name' in p || '(name)' in p))) return patch; // no merge key: replace
      for (const item of patch as Obj[]) {
        if ('(name)' in item) {
          const { '(name)': glob, ...rest } = item;
          const re = new RegExp(`^${String(glob).replace(/\*/g, '.*')}$`);
          list.forEach((t, i) => re.test(t.name) && (list[i] = strategicMerge(t, rest) as Obj));
        } else {
          const i = list.findIndex((t) => t.name === item.name);
          if (i >= 0) list[i] = strategicMerge(list[i], item) as Obj;
          else list.push(item);
        }
      }
      return list;
    }
    if (patch && typeof patch === 'object') {
      const out: Obj = { ...((target as Obj) ?? {}) };
      for (const [k, v] of Object.entries(patch)) out[k] = strategicMerge(out[k], v);
      return out;
    }
    return patch;
  }

  const rule = policy.spec.rules[0] as Obj;
  const labelKey = /labels\."([^"]+)"/.exec(rule.preconditions.all[0].key as string)![1]!;
  const applies = (d: Obj) =>
    rule.match.any[0].resources.kinds.includes(d.kind) &&
    rule.match.any[0].resources.namespaces.includes(d.metadata.namespace) &&
    d.spec.template.metadata.labels[labelKey] === rule.preconditions.all[0].value;
  const mutate = (d: Obj) => (applies(d) ? (strategicMerge(d, rule.mutate.patchStrategicMerge) as Obj) : d);

  it('matches on the pod template label stack.yml sets on every function, on create and update', () => {
    expect(labelKey).toBe('pulsevault.io/media-volume');
    expect(rule.match.any[0].resources.operations).toEqual(['CREATE', 'UPDATE']);
    for (const fn of stack.functions) expect(fn.labels[labelKey], fn.name).toBe('true');
    // faas-netes puts function labels on the pod template only, so a metadata.labels selector would never match.
    expect(rule.match.any[0].resources.selector).toBeUndefined();
  });

  it.each(stack.functions.map((f) => [f.name, f] as const))('%s gets the PVC at MEDIA_ROOT as uid 1000, keeping its secrets', async (_name, fn) => {
    const mutated = mutate(faasNetesDeployment(fn));
    const { Deployment } = await import('kubernetes-models/apps/v1');
    expect(() => new Deployment(mutated as ConstructorParameters<typeof Deployment>[0]).validate()).not.toThrow();

    const pod = mutated.spec.template.spec as Obj;
    const volume = (pod.volumes as Obj[]).find((v) => v.persistentVolumeClaim);
    expect(volume?.persistentVolumeClaim.claimName).toBe(pvc.metadata.name);
    expect(pvc.spec.accessModes).toEqual(['ReadWriteMany']);
    expect(pvc.metadata.namespace).toBe(mutated.metadata.namespace);
    const c = pod.containers[0] as Obj;
    expect(c.volumeMounts).toContainEqual({ name: volume!.name, mountPath: MEDIA_ROOT });
    expect(c.volumeMounts.map((m: Obj) => m.mountPath)).toEqual(expect.arrayContaining(['/tmp', '/var/openfaas/secrets']));
    expect(c.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }, { configMapRef: { name: siteConfig.metadata.name } }]);
    expect(c.env.length).toBe(Object.keys(fn.environment).length); // stack.yml's environment survives
    // The template image runs as USER 1000:1000; the volume must be writable by it.
    const user = /^USER (\d+):(\d+)$/m.exec(readFileSync('templates/pulsevault-node20/Dockerfile', 'utf8'))!;
    expect(pod.securityContext).toMatchObject({ runAsUser: Number(user[1]), runAsGroup: Number(user[2]), fsGroup: Number(user[2]), runAsNonRoot: true });
    expect(c.securityContext).toMatchObject({ runAsUser: Number(user[1]), allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
  });

  it('mounts the volume read-only for the audit report, and only for it (pulsevault.io/audit-reader)', () => {
    const readOnlyRule = policy.spec.rules.find((r: Obj) => r.name === 'media-volume-read-only-for-audit-readers') as Obj;
    const readerKey = /labels\."([^"]+)"/.exec(readOnlyRule.preconditions.all[0].key as string)![1]!;
    expect(readerKey).toBe('pulsevault.io/audit-reader');
    expect(stack.functions.filter((f) => f.labels[readerKey] === 'true').map((f) => f.name)).toEqual(['audit-report']);
    const both = (d: Obj) => (d.spec.template.metadata.labels[readerKey] === 'true' ? (strategicMerge(mutate(d), readOnlyRule.mutate.patchStrategicMerge) as Obj) : mutate(d));
    for (const fn of stack.functions) {
      const pod = both(faasNetesDeployment(fn)).spec.template.spec as Obj;
      const volume = (pod.volumes as Obj[]).find((v) => v.persistentVolumeClaim)!;
      const mount = (pod.containers[0].volumeMounts as Obj[]).find((m) => m.name === volume.name)!;
      const readOnly = fn.name === 'audit-report';
      expect([!!mount.readOnly, !!volume.persistentVolumeClaim.readOnly, mount.mountPath], fn.name).toEqual([readOnly, readOnly, MEDIA_ROOT]);
    }
  });

  it('leaves other Deployments alone and is idempotent across redeploys', () => {
    const other = faasNetesDeployment({ ...stack.functions[0]!, name: 'someone-else', labels: {} });
    expect(mutate(other)).toBe(other);
    const once = mutate(faasNetesDeployment(stack.functions[0]!));
    expect(mutate(once)).toEqual(once);
  });

  it('the ConfigMaps injected into functions hold only PulseVault configuration variables (and the site block’s host and storage class)', () => {
    for (const key of Object.keys(configMap.data)) expect(configNames, key).toContain(key);
    for (const key of Object.keys(siteConfig.data)) expect([...configNames, 'PUBLIC_HOST', 'MEDIA_STORAGE_CLASS'], key).toContain(key);
    for (const key of Object.keys(siteConfig.data)) expect(configMap.data[key], `${key} is the site's: only in site.env`).toBeUndefined();
    expect(MEDIA_ROOT).toBe(variables.find((v) => v.name === 'MEDIA_ROOT')!.default);
    const redis = named('Service', 'redis');
    expect(configMap.data.REDIS_HOST).toBe(`${redis.metadata.name}.${redis.metadata.namespace}.svc.cluster.local`);
    expect(configMap.data.REDIS_PORT).toBe(String(redis.spec.ports.find((p: Obj) => p.name === 'redis').port));
  });
});

describe('workloads', () => {
  it('every pod is non-root, read-only, without privilege escalation or capabilities, with RuntimeDefault seccomp', () => {
    expect(workloads.length).toBeGreaterThanOrEqual(4);
    for (const w of workloads) {
      const pod = podTemplate(w).spec as Obj;
      const where = `${w.kind} ${w.metadata.name}`;
      expect(pod.securityContext?.runAsNonRoot, where).toBe(true);
      expect(pod.securityContext?.seccompProfile, where).toEqual({ type: 'RuntimeDefault' });
      expect(pod.automountServiceAccountToken, where).toBe(false);
      for (const c of [...(pod.initContainers ?? []), ...pod.containers] as Obj[]) {
        expect(c.securityContext, `${where}/${c.name}`).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
        expect(c.securityContext.privileged, `${where}/${c.name}`).toBeUndefined();
        expect(c.resources?.limits?.memory, `${where}/${c.name} memory limit`).toBeDefined();
      }
    }
    expect(named('Namespace', 'openfaas-fn').metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
  });

  it('the services run their compiled entry points, as the local stack does', () => {
    const devstack = readFileSync('services/devstack/main.ts', 'utf8');
    for (const name of ['queue-connector', 'audit-writer']) {
      const d = named('Deployment', name);
      const c = d.spec.template.spec.containers[0] as Obj;
      expect(c.command).toEqual(['node', `dist/services/${name}/main.js`]);
      expect(devstack).toContain(`entry: 'dist/services/${name}/main.js'`);
      expect(c.envFrom).toEqual([{ configMapRef: { name: 'pulsevault-config' } }, { configMapRef: { name: 'pulsevault-site' } }]);
      for (const e of c.env as Obj[]) expect(configNames, `${name} env ${e.name}`).toContain(e.name);
    }
    const writer = named('Deployment', 'audit-writer');
    expect(writer.spec.replicas).toBe(1);
    expect(writer.spec.strategy).toEqual({ type: 'Recreate' });
    const scrub = named('CronJob', 'pulsevault-scrub').spec.jobTemplate.spec.template.spec.containers[0] as Obj;
    expect(scrub.command.slice(0, 3)).toEqual(['node', 'dist/scripts/pulsevault.js', 'scrub']);
    expect(existsSync('scripts/commands/scrub.ts')).toBe(true);
    const reindex = named('CronJob', 'pulsevault-reindex').spec.jobTemplate.spec.template.spec.containers[0] as Obj;
    expect(reindex.command).toEqual(['node', 'dist/scripts/pulsevault.js', 'reindex']);
    expect(existsSync('scripts/commands/reindex.ts')).toBe(true);
  });

  it('the reindex CronJob runs hourly, one at a time, as the scrub job does, with only the metadata-dsn secret', () => {
    const scrub = named('CronJob', 'pulsevault-scrub');
    const reindex = named('CronJob', 'pulsevault-reindex');
    expect(reindex.spec.schedule).toMatch(/^\d{1,2} \* \* \* \*$/);
    expect(reindex.spec.concurrencyPolicy).toBe('Forbid');
    expect(reindex.spec.jobTemplate.spec.backoffLimit).toBe(scrub.spec.jobTemplate.spec.backoffLimit);
    // Ends before the next hourly run is due, so Forbid never skips runs because one hung.
    expect(reindex.spec.jobTemplate.spec.activeDeadlineSeconds).toBeLessThan(3600);
    const s = podTemplate(scrub).spec as Obj;
    const r = podTemplate(reindex).spec as Obj;
    expect(r.securityContext).toEqual(s.securityContext);
    expect(r.automountServiceAccountToken).toBe(s.automountServiceAccountToken);
    expect(r.restartPolicy).toBe(s.restartPolicy);
    const sc = s.containers[0] as Obj;
    const rc = r.containers[0] as Obj;
    for (const key of ['image', 'envFrom', 'securityContext', 'resources']) expect(rc[key], key).toEqual(sc[key]);
    const media = (p: Obj) => (p.volumes as Obj[]).find((v) => v.persistentVolumeClaim)!;
    expect(media(r)).toEqual(media(s));
    expect(rc.volumeMounts).toContainEqual(sc.volumeMounts.find((m: Obj) => m.name === media(s).name));
    const secrets = (r.volumes as Obj[]).flatMap((v) => (v.projected?.sources ?? []).map((x: Obj) => x.secret.name));
    expect(secrets).toEqual([variables.find((v) => v.name === 'METADATA_DSN')!.secretFile]);
  });

  it('the audit reindex CronJob runs `audit reindex` daily, one at a time, with the volume writable and only the audit signing key', () => {
    const scrub = named('CronJob', 'pulsevault-scrub');
    const job = named('CronJob', 'pulsevault-audit-reindex');
    expect(job.spec.schedule).toMatch(/^\d{1,2} \d{1,2} \* \* \*$/);
    expect(job.spec.concurrencyPolicy).toBe('Forbid');
    expect(job.spec.jobTemplate.spec.activeDeadlineSeconds).toBeLessThan(86_400);
    const s = podTemplate(scrub).spec as Obj;
    const r = podTemplate(job).spec as Obj;
    expect(r.securityContext).toEqual(s.securityContext);
    expect(r.automountServiceAccountToken).toBe(false);
    const rc = r.containers[0] as Obj;
    expect(rc.command).toEqual(['node', 'dist/scripts/pulsevault.js', 'audit', 'reindex']);
    for (const key of ['image', 'envFrom', 'securityContext']) expect(rc[key], key).toEqual((s.containers[0] as Obj)[key]);
    const media = (r.volumes as Obj[]).find((v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name)!;
    expect(media.persistentVolumeClaim.readOnly).toBeUndefined();
    expect(rc.volumeMounts.find((m: Obj) => m.name === media.name).readOnly).toBeUndefined();
    const secrets = (r.volumes as Obj[]).flatMap((v) => (v.projected?.sources ?? []).map((x: Obj) => x.secret.name));
    expect(secrets).toEqual([variables.find((v) => v.name === 'AUDIT_SIGNING_KEY')!.secretFile]);
  });

  it('processes that mount the media volume mount the one PVC at MEDIA_ROOT; the CronJobs read-only but retention (disposes of videos) and audit reindex (writes the index)', () => {
    for (const w of workloads) {
      const pod = podTemplate(w).spec as Obj;
      const media = (pod.volumes ?? []).find((v: Obj) => v.persistentVolumeClaim?.claimName === pvc.metadata.name);
      if (!media) continue;
      const mount = pod.containers[0].volumeMounts.find((m: Obj) => m.name === media.name);
      expect(mount?.mountPath, w.metadata.name).toBe(MEDIA_ROOT);
      if (w.kind === 'CronJob') expect(Boolean(mount.readOnly && media.persistentVolumeClaim.readOnly), w.metadata.name).toBe(!['pulsevault-retention', 'pulsevault-audit-reindex'].includes(w.metadata.name));
    }
  });

  it('every PulseVault process (functions through the Kyverno policy, services, CronJobs) trusts the site CA bundle at NODE_EXTRA_CA_CERTS', () => {
    const bundle = configMap.data.NODE_EXTRA_CA_CERTS as string;
    const generated = named('ConfigMap', 'pulsevault-ca-bundle');
    expect(Object.keys(generated.data)).toEqual([path.basename(bundle)]);
    const functionPod = policy.spec.rules[0].mutate.patchStrategicMerge.spec.template.spec as Obj;
    const pods = [
      { who: 'functions (Kyverno)', pod: functionPod },
      ...workloads.filter((w) => (podTemplate(w).spec.containers[0].envFrom ?? []).some((e: Obj) => e.configMapRef?.name === 'pulsevault-config')).map((w) => ({ who: w.metadata.name as string, pod: podTemplate(w).spec as Obj })),
    ];
    expect(pods.map((p) => p.who)).toEqual(expect.arrayContaining(['functions (Kyverno)', 'queue-connector', 'audit-writer', 'pulsevault-scrub', 'pulsevault-reindex']));
    for (const { who, pod } of pods) {
      const volume = (pod.volumes as Obj[]).find((v) => v.configMap?.name === 'pulsevault-ca-bundle');
      expect(volume, who).toBeDefined();
      const mount = (pod.containers[0].volumeMounts as Obj[]).find((m) => m.name === volume!.name);
      expect([mount?.mountPath, mount?.readOnly], who).toEqual([path.dirname(bundle), true]);
    }
  });

  it("private images: the pull secret sits on openfaas-fn's default ServiceAccount, which every pod there runs as (faas-netes' too)", () => {
    const account = byKind('ServiceAccount').find((a) => a.metadata.name === 'default' && a.metadata.namespace === 'openfaas-fn');
    expect(account?.imagePullSecrets).toEqual([{ name: 'pulsevault-registry' }]);
    for (const w of workloads.filter((w) => w.metadata.namespace === 'openfaas-fn')) expect(podTemplate(w).spec.serviceAccountName, w.metadata.name).toBeUndefined();
  });

  it('secrets come from the OpenFaaS secrets the configuration knows, at the path it reads', () => {
    const used = new Set<string>();
    for (const w of workloads) {
      const pod = podTemplate(w).spec as Obj;
      for (const v of pod.volumes ?? []) {
        for (const s of v.projected?.sources ?? []) used.add(s.secret.name);
        if (v.secret) used.add(v.secret.secretName);
        const mount = pod.containers[0].volumeMounts?.find((m: Obj) => m.name === v.name);
        if (v.projected) expect(mount?.mountPath).toBe('/var/openfaas/secrets');
      }
      for (const c of pod.containers as Obj[]) for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) used.add(e.valueFrom.secretKeyRef.name);
    }
    for (const s of used) expect(secretFiles, s).toContain(s);
    // docs/deploy.md's steps create every secret a function or a service mounts.
    const deployDoc = readFileSync('docs/deploy.md', 'utf8');
    for (const s of new Set([...used, ...stack.functions.flatMap((f) => f.secrets)])) expect(deployDoc, s).toContain(`faas-cli secret create ${s} `);
  });

  it('Redis persists with AOF, takes its password from the secret, and exports redis_up', () => {
    const conf = named('ConfigMap', 'redis-config').data['redis.conf'] as string;
    expect(conf).toMatch(/^appendonly yes$/m);
    expect(conf).toMatch(/^maxmemory-policy noeviction$/m);
    const sts = named('StatefulSet', 'redis');
    expect(sts.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
    const redis = (sts.spec.template.spec.containers as Obj[]).find((c) => c.name === 'redis')!;
    expect(redis.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(conf).toMatch(/^dir \/data$/m);
    const init = sts.spec.template.spec.initContainers[0] as Obj;
    expect(init.command.join(' ')).toContain('requirepass');
    expect(sts.spec.template.spec.volumes).toContainEqual({ name: 'password', secret: { secretName: 'redis-password' } });
    expect((sts.spec.template.spec.containers as Obj[]).some((c) => String(c.image).startsWith('oliver006/redis_exporter:'))).toBe(true);
  });
});

describe('network policies', () => {
  // The base install; the optional KEDA component adds one policy of its own (checked last).
  const policies = manifests.filter((m) => m.doc.kind === 'NetworkPolicy' && !m.file.includes('/keda/')).map((m) => m.doc);
  const selects = (sel: Obj | undefined, labels: Record<string, string>) =>
    Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
    ((sel?.matchExpressions ?? []) as Obj[]).every(({ key, operator, values }) =>
      operator === 'In' ? values.includes(labels[key]) : operator === 'NotIn' ? !values.includes(labels[key]) : operator === 'Exists' ? key in labels : operator === 'DoesNotExist' ? !(key in labels) : false,
    );
  const functionPodLabels = stack.functions.map((f) => ({ faas_function: f.name, ...f.labels }));
  const podLabels = (kind: string, name: string) => podTemplate(named(kind, name)).metadata.labels as Record<string, string>;
  /** Peers allowed to reach a pod with these labels on a port, as [namespaceSelector?, podSelector?] pairs. */
  const allowedPeers = (labels: Record<string, string>, port: number) =>
    policies
      .filter((p) => p.spec.policyTypes.includes('Ingress') && selects(p.spec.podSelector, labels))
      .flatMap((p) => (p.spec.ingress ?? []) as Obj[])
      .filter((r) => (r.ports ?? []).some((x: Obj) => x.port === port))
      .flatMap((r) => r.from as Obj[]);

  it('deny all ingress in openfaas-fn by default', () => {
    expect(policies.some((p) => p.metadata.namespace === 'openfaas-fn' && Object.keys(p.spec.podSelector).length === 0 && p.spec.policyTypes.includes('Ingress') && !p.spec.ingress)).toBe(true);
  });

  const ingressNginx = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'ingress-nginx' } } };
  const mediaEdge = { podSelector: { matchLabels: { 'app.kubernetes.io/name': 'media-edge' } } };

  it('functions accept only ingress-nginx, the OpenFaaS gateway (and Prometheus); stream also the media edge', () => {
    for (const labels of functionPodLabels) {
      const peers = allowedPeers(labels, 8080);
      expect(peers).toContainEqual({ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'openfaas' } }, podSelector: { matchLabels: { app: 'gateway' } } });
      expect(peers).toContainEqual(ingressNginx);
      if (labels.faas_function === 'stream') expect(peers).toContainEqual(mediaEdge);
      for (const p of peers) {
        expect(
          p.podSelector?.matchLabels?.app === 'gateway' ||
            p.podSelector?.matchLabels?.app === 'prometheus' ||
            p.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'] === 'monitoring' ||
            JSON.stringify(p) === JSON.stringify(ingressNginx) ||
            (labels.faas_function === 'stream' && JSON.stringify(p) === JSON.stringify(mediaEdge)),
        ).toBe(true);
      }
    }
  });

  it('the media edge accepts only the ingress controller', () => {
    expect(allowedPeers(podLabels('Deployment', 'media-edge'), 8080)).toEqual([ingressNginx]);
  });

  it('Redis accepts the functions, the connector and the audit writer, nothing else, and makes no calls', () => {
    const redisLabels = podLabels('StatefulSet', 'redis');
    const peers = allowedPeers(redisLabels, 6379);
    expect(peers.every((p) => !p.namespaceSelector && p.podSelector)).toBe(true); // same namespace, selected pods only
    const reaches = (labels: Record<string, string>) => peers.some((p) => selects(p.podSelector, labels));
    for (const labels of functionPodLabels) expect(reaches(labels), labels.faas_function).toBe(true);
    expect(reaches(podLabels('Deployment', 'queue-connector'))).toBe(true);
    expect(reaches(podLabels('Deployment', 'audit-writer'))).toBe(true);
    expect(reaches(podLabels('CronJob', 'pulsevault-scrub'))).toBe(false);
    expect(reaches(podLabels('CronJob', 'pulsevault-reindex'))).toBe(false);
    expect(reaches({ app: 'anything-else' })).toBe(false);
    const own = policies.find((p) => selects(p.spec.podSelector, redisLabels) && p.spec.policyTypes.includes('Egress'));
    expect(own?.spec.egress).toEqual([]);
  });

  it("the audit writer's intake accepts the functions and the connector, nothing else; AUDIT_WRITER_URL names its Service, which is ready only with the intake open", () => {
    const writer = named('Deployment', 'audit-writer');
    const container = podTemplate(writer).spec.containers[0];
    const intakePort = Number(container.env.find((e: Obj) => e.name === 'AUDIT_INTAKE_PORT').value);
    expect(container.ports).toContainEqual({ name: 'intake', containerPort: intakePort });
    expect(container.readinessProbe.tcpSocket.port).toBe('intake');
    const service = named('Service', 'audit-writer');
    expect(Object.keys(service.spec.selector).length).toBeGreaterThan(0);
    expect(selects({ matchLabels: service.spec.selector }, podLabels('Deployment', 'audit-writer'))).toBe(true);
    const servicePort = service.spec.ports.find((p: Obj) => p.targetPort === 'intake').port;
    expect(configMap.data.AUDIT_WRITER_URL).toBe(`tcp://audit-writer.${service.metadata.namespace}.svc.cluster.local:${servicePort}`);

    const peers = allowedPeers(podLabels('Deployment', 'audit-writer'), intakePort);
    expect(peers.every((p) => !p.namespaceSelector && p.podSelector)).toBe(true);
    const reaches = (labels: Record<string, string>) => peers.some((p) => selects(p.podSelector, labels));
    for (const labels of functionPodLabels) expect(reaches(labels), labels.faas_function).toBe(true);
    expect(reaches(podLabels('Deployment', 'queue-connector'))).toBe(true);
    expect(reaches(podLabels('Deployment', 'media-edge'))).toBe(false);
    expect(reaches(podLabels('CronJob', 'pulsevault-scrub'))).toBe(false);
    expect(reaches({ app: 'anything-else' })).toBe(false);
  });

  it('only the webhook sender may leave the cluster: every other pod reaches cluster pods and private networks only, never the metadata service', () => {
    const inNamespace = (kind: string) => manifests.filter((m) => m.doc.kind === kind && m.doc.metadata.namespace === 'openfaas-fn' && !m.file.includes('/keda/')).map((m) => ({ name: `${kind} ${m.doc.metadata.name}`, labels: podTemplate(m.doc).metadata.labels as Record<string, string> }));
    const pods: { name: string; labels: Record<string, string> }[] = [...functionPodLabels.map((labels) => ({ name: `function ${labels.faas_function}`, labels: labels as Record<string, string> })), ...['Deployment', 'StatefulSet', 'CronJob'].flatMap(inNamespace)];
    expect(pods.map((p) => p.name)).toEqual(expect.arrayContaining(['function webhooks', 'Deployment webhook-sender', 'Deployment queue-connector', 'Deployment audit-writer', 'Deployment media-edge', 'StatefulSet redis']));
    // Where a pod's egress may go: null = anywhere (no Egress policy selects it); else the union of every rule.
    const egressOf = (labels: Record<string, string>) => {
      const own = policies.filter((p) => p.spec.policyTypes.includes('Egress') && selects(p.spec.podSelector, labels));
      return own.length === 0 ? null : own.flatMap((p) => (p.spec.egress ?? []) as Obj[]).flatMap((r) => (r.to ?? [{ ipBlock: { cidr: '0.0.0.0/0' } }]) as Obj[]);
    };
    const reachesAddress = (peers: Obj[], address: string) =>
      peers.some((p) => p.ipBlock && ipaddr.parse(address).match(ipaddr.parseCIDR(p.ipBlock.cidr)) && !(p.ipBlock.except ?? []).some((e: string) => ipaddr.parse(address).match(ipaddr.parseCIDR(e))));
    for (const { name, labels } of pods) {
      const peers = egressOf(labels);
      expect(peers, `${name} has no egress policy`).not.toBeNull();
      expect(reachesAddress(peers!, '169.254.169.254'), name).toBe(false);
      expect(reachesAddress(peers!, '93.184.216.34'), name).toBe(name === 'Deployment webhook-sender');
      if (labels['app.kubernetes.io/name'] !== 'redis') expect(peers!.some((p) => p.ipBlock?.cidr === '10.0.0.0/8' || p.namespaceSelector || p.podSelector), name).toBe(true);
    }
    // Redis is not widened by the inside-only policy: its only egress is its own `egress: []`.
    expect(egressOf(podLabels('StatefulSet', 'redis'))).toEqual([]);
  });

  it('the KEDA component lets only the keda namespace reach Redis in addition', () => {
    const extra = manifests.filter((m) => m.doc.kind === 'NetworkPolicy' && m.file.includes('/keda/')).map((m) => m.doc);
    expect(extra).toHaveLength(1);
    expect(selects(extra[0]!.spec.podSelector, podLabels('StatefulSet', 'redis'))).toBe(true);
    expect(extra[0]!.spec.ingress).toEqual([{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'keda' } } }], ports: [{ port: 6379, protocol: 'TCP' }] }]);
  });
});

describe('media edge', () => {
  const edge = named('Deployment', 'media-edge');
  const pod = podTemplate(edge).spec as Obj;

  it('runs the nginx.conf generated from the routing table', () => {
    expect(readFileSync(path.join(K8S, 'media-edge/nginx.conf'), 'utf8'), 'regenerate: node dist/services/media-edge/print-k8s-config.js > k8s/media-edge/nginx.conf').toBe(mediaEdgeConfig(K8S_MEDIA_EDGE));
    const kustomization = loadDocs(path.join(K8S, 'kustomization.yaml'))[0]!;
    const generated = (kustomization.configMapGenerator as Obj[]).find((g) => g.name === 'media-edge-nginx');
    expect(generated).toMatchObject({ namespace: 'openfaas-fn', files: ['media-edge/nginx.conf'] });
    // kustomize appends the content hash to a generated ConfigMap's name (a new nginx.conf rolls the pods).
    expect(pod.volumes.find((v: Obj) => v.name === 'config').configMap.name).toMatch(/^media-edge-nginx(-[a-z0-9]+)?$/);
    expect(pod.containers[0].command).toEqual(['nginx', '-c', '/etc/nginx/pulsevault/nginx.conf']);
  });

  it('reads the media volume read-only at MEDIA_ROOT, writes only to an emptyDir', () => {
    const media = pod.volumes.find((v: Obj) => v.persistentVolumeClaim);
    expect(media.persistentVolumeClaim).toEqual({ claimName: pvc.metadata.name, readOnly: true });
    const mounts = pod.containers[0].volumeMounts as Obj[];
    expect(mounts.find((m) => m.name === media.name)).toEqual({ name: media.name, mountPath: MEDIA_ROOT, readOnly: true });
    expect(`${MEDIA_ROOT}/videos`).toBe(K8S_MEDIA_EDGE.videoDir);
    const writable = mounts.filter((m) => !m.readOnly).map((m) => pod.volumes.find((v: Obj) => v.name === m.name));
    expect(writable.every((v: Obj) => v.emptyDir)).toBe(true);
    expect(mounts.find((m) => !m.readOnly)?.mountPath).toBe(K8S_MEDIA_EDGE.tempDir);
    // The grant cache (keys hold tokens) lives in memory and fits the volume with room for nginx's other temp files.
    const tmp = writable[0].emptyDir as Obj;
    expect(tmp.medium).toBe('Memory');
    const cacheMiB = Number(/proxy_cache_path \S+ .*max_size=(\d+)m/.exec(mediaEdgeConfig(K8S_MEDIA_EDGE))![1]);
    expect(cacheMiB).toBeLessThanOrEqual(Number(String(tmp.sizeLimit).replace('Mi', '')) / 2);
  });

  it('never spools what the stream function sends to its temp volume (memory in k8s; an original decrypted in the clear)', () => {
    const config = mediaEdgeConfig(K8S_MEDIA_EDGE);
    // Every location that proxies a request for the function to answer, not the grant subrequest (whose answer has no body).
    const answered = config.split(/\n\s*location /).filter((block) => /proxy_pass http:\/\/pulsevault_stream;/.test(block));
    expect(answered.length).toBeGreaterThanOrEqual(2);
    for (const block of answered) expect(block, block.split('\n')[0]).toContain('proxy_max_temp_file_size 0;');
  });

  it("gets the edge's key from the secret media-edge-key through its init container, as the local stack writes it", () => {
    const init = (pod.initContainers as Obj[]).find((c) => c.name === 'edge-key')!;
    const secretVolume = pod.volumes.find((v: Obj) => v.secret?.secretName === 'media-edge-key');
    const secretMount = (init.volumeMounts as Obj[]).find((m) => m.name === secretVolume.name)!;
    expect(secretMount.readOnly).toBe(true);
    expect((init.volumeMounts as Obj[]).find((m) => m.name === 'tmp')!.mountPath).toBe(K8S_MEDIA_EDGE.tempDir);
    expect(mediaEdgeConfig(K8S_MEDIA_EDGE)).toContain(`include ${K8S_MEDIA_EDGE.edgeKeyFile};`);
    expect(readStack('stack.yml').functions.find((f) => f.name === 'stream')!.secrets).toContain('media-edge-key');
    // The script itself, with its two paths moved into a scratch directory: the same include, or a refusal.
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-edge-key-'));
    try {
      const script = (init.command as string[])[2]!.replaceAll(`${secretMount.mountPath}/`, `${dir}/`).replaceAll(K8S_MEDIA_EDGE.edgeKeyFile, `${dir}/out.conf`);
      const run = (key: string) => {
        writeFileSync(path.join(dir, 'media-edge-key'), `${key}\n`);
        rmSync(path.join(dir, 'out.conf'), { force: true });
        try {
          execFileSync('sh', ['-c', script], { stdio: 'pipe' });
          return readFileSync(path.join(dir, 'out.conf'), 'utf8');
        } catch {
          return null;
        }
      };
      const key = 'a'.repeat(20) + '0123456789+/=._-';
      expect(run(key)).toBe(edgeKeyInclude(key));
      expect(run('short')).toBeNull();
      expect(run(`${'a'.repeat(40)}"; }`)).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the ingress drops every edge-only header a client sends', () => {
    const values = parseYaml(readFileSync(path.join(K8S, 'ingress-nginx-values.yaml'), 'utf8')).controller.proxySetHeaders as Obj;
    expect(Object.fromEntries(Object.entries(values).map(([k, v]) => [k.toLowerCase(), v]))).toEqual(Object.fromEntries(EDGE_ONLY_HEADERS.map((h) => [h, ''])));
  });

  it('logs no query string (token), no client address and no request line', () => {
    const conf = mediaEdgeConfig(K8S_MEDIA_EDGE);
    const format = /log_format pulsevault_edge[^;]*;/.exec(conf)![0];
    for (const leaky of ['$request', '$request_uri', '$args', '$query_string', '$arg_', '$remote_addr', '$http_x_forwarded_for', '$uri']) expect(format, leaky).not.toContain(`${leaky}"`);
    expect(format).not.toMatch(/\$(request|args|query_string|arg_|remote_addr|http_|uri)\b/);
    expect(conf).toMatch(/error_log stderr crit;/);
  });
});

describe('public ingress', () => {
  const ingresses = byKind('Ingress');
  const locations = ingresses.flatMap((ing) =>
    (ing.spec.rules as Obj[]).flatMap((r) =>
      (r.http.paths as Obj[]).map((p) => ({
        ingress: ing,
        host: r.host as string,
        path: p.path as string,
        target: ing.metadata.annotations['nginx.ingress.kubernetes.io/rewrite-target'] as string | undefined,
        fn: p.backend.service.name as string,
        // ingress-nginx: `location ~* "^<path>"`, and with a rewrite-target `rewrite "(?i)<path>" <target> break;`
        location: new RegExp(`^${p.path}`, 'i'),
        backend: p.backend.service,
      })),
    ),
  );

  /** Where ingress-nginx sends a path: the function's Service and the path after the rewrite, or null (404). */
  function nginx(pathname: string): { name: string; path: string } | null {
    const hits = locations.filter((l) => l.location.test(pathname));
    expect(hits.length, `${pathname} matches ${hits.length} locations`).toBeLessThanOrEqual(1);
    const hit = hits[0];
    if (!hit) return null;
    if (hit.target === undefined) return { name: hit.fn, path: pathname };
    return { name: hit.fn, path: pathname.replace(new RegExp(hit.path, 'i'), hit.target) };
  }

  function expectSameRouting(pathname: string): void {
    const route = matchPublicRoute('GET', pathname)?.route;
    const sent = nginx(pathname);
    if (!route) return void expect(sent, pathname).toBeNull();
    // Stream paths go to the media edge (its nginx.conf, generated from the same table, hands them to stream).
    expect(sent, pathname).toEqual({ name: route.function === 'stream' ? 'media-edge' : route.function, path: pathname });
  }

  const id = randomUUID();
  const samples = [
    '/uploads',
    '/uploads/0f1e2d3c4b5a',
    '/uploads/finalize',
    '/uploads/finalize/x',
    '/uploads/a/b',
    '/media/sign',
    '/media/signx',
    '/media/videos',
    '/media/videos/',
    `/media/videos/${id}/metadata`,
    `/media/videos/${id.toUpperCase()}/renditions`,
    `/media/videos/${id}/metadata/extra`,
    `/media/videos/${id}/hls/master.m3u8`,
    `/media/videos/${id}/hls/720p_003.m4s`,
    `/media/videos/${id}/original.mp4`,
    '/media/videos/not-a-uuid/metadata',
    '/function/sign',
    '/system/functions',
    '/metrics',
    '/',
  ];

  it.each(samples)('routes %s as the routing table does', (p) => expectSameRouting(p));

  it('routes any path as the routing table does', () => {
    const segment = fc.constantFrom('uploads', 'finalize', 'media', 'sign', 'videos', 'metadata', 'renditions', 'hls', 'master.m3u8', 'x', id, '');
    fc.assert(
      fc.property(fc.array(segment, { minLength: 0, maxLength: 5 }), (segments) => expectSameRouting(`/${segments.join('/')}`)),
      { numRuns: 2000 },
    );
  });

  it('every function with a public route has one Ingress to its own Service, not through the gateway (which logs URLs with their query: tokens)', () => {
    const routed = new Set(PUBLIC_ROUTES.map((r) => r.function));
    for (const fn of FUNCTIONS) {
      const service = fn === 'stream' ? 'media-edge' : fn;
      const own = ingresses.filter((i) => (i.spec.rules as Obj[]).some((r) => (r.http.paths as Obj[]).some((p) => p.backend.service.name === service)));
      expect(own.length, fn).toBe(routed.has(fn) ? 1 : 0);
    }
    for (const l of locations) {
      // faas-netes' Service per function: <name>:8080 in openfaas-fn (pkg/handlers/deploy.go).
      expect([...FUNCTIONS.filter((f) => f !== 'stream'), 'media-edge']).toContain(l.backend.name);
      expect(l.backend.port).toEqual({ number: 8080 });
      expect(l.target).toBeUndefined(); // no rewrite: the path reaches the function unchanged
      expect(l.ingress.metadata.namespace).toBe('openfaas-fn');
      expect(l.ingress.spec.ingressClassName).toBe('nginx');
    }
    expect(locations.filter((l) => l.backend.name === 'media-edge').map((l) => l.ingress.metadata.name)).toEqual(['pulsevault-stream']);
  });

  it('TLS on every host with HTTPS redirect and HSTS; PUBLIC_URL is that host', () => {
    for (const ing of ingresses) {
      const hosts = (ing.spec.rules as Obj[]).map((r) => r.host);
      expect((ing.spec.tls as Obj[]).flatMap((t) => t.hosts)).toEqual(expect.arrayContaining(hosts));
      expect(ing.metadata.annotations['nginx.ingress.kubernetes.io/force-ssl-redirect']).toBe('true');
      expect(ing.metadata.annotations['nginx.ingress.kubernetes.io/use-regex']).toBe('true');
    }
    const controller = parseYaml(readFileSync(path.join(K8S, 'ingress-nginx-values.yaml'), 'utf8')).controller.config as Obj;
    expect(controller.hsts).toBe('true');
    expect(Number(controller['hsts-max-age'])).toBeGreaterThanOrEqual(31_536_000);
    expect(String(controller['ssl-protocols']).split(' ').sort()).toEqual(['TLSv1.2', 'TLSv1.3']);
    expect(new URL(siteConfig.data.PUBLIC_URL).host).toBe(locations[0]!.host);
    expect(siteConfig.data.PUBLIC_HOST).toBe(locations[0]!.host);
    expect(new Set(locations.map((l) => l.host)).size).toBe(1);
  });

  it('ingress-nginx logs no query string, credential, cookie or client address (signed URLs carry tokens in the query)', () => {
    const controller = parseYaml(readFileSync(path.join(K8S, 'ingress-nginx-values.yaml'), 'utf8')).controller.config as Obj;
    const variables = String(controller['log-format-upstream']).match(/\$[a-z_0-9]+/g)!;
    expect(variables).toContain('$uri'); // the path only; $request and $request_uri include the query
    for (const v of variables) expect(v, v).not.toMatch(/^\$(request|request_uri|args|query_string|arg_.*|http_authorization|http_cookie|cookie_.*|request_body|remote_addr|realip_remote_addr|binary_remote_addr|http_x_forwarded_for|proxy_add_x_forwarded_for|http_x_real_ip)$/);
    expect(controller['error-log-level']).toBe('crit'); // error lines quote the request line, query included
  });

  it('upload paths stream (no body limit, no request buffering); other paths keep a limit', () => {
    for (const route of PUBLIC_ROUTES) {
      const ann = locations.find((l) => l.fn === (route.function === 'stream' ? 'media-edge' : route.function))!.ingress.metadata.annotations as Obj;
      if (route.streamingUpload) {
        expect(ann['nginx.ingress.kubernetes.io/proxy-body-size']).toBe('0');
        expect(ann['nginx.ingress.kubernetes.io/proxy-request-buffering']).toBe('off');
      } else {
        expect(ann['nginx.ingress.kubernetes.io/proxy-body-size']).toMatch(/^\d+[km]$/);
      }
    }
  });
});

describe('OpenFaaS', () => {
  const seconds = (d: string) => {
    const m = /^(\d+)(ms|s|m|h)$/.exec(String(d).trim());
    expect(m, `duration ${d}`).not.toBeNull();
    return Number(m![1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m![2] as 'ms' | 's' | 'm' | 'h'];
  };
  const values = parseYaml(readFileSync(path.join(K8S, 'openfaas-values.yaml'), 'utf8')) as Obj;

  it('gateway timeouts: every exec_timeout <= upstream 61m < read/write 62m, as docs/deploy.md "Timeouts" says', () => {
    const upstream = seconds(values.gateway.upstreamTimeout);
    expect(upstream).toBe(61 * 60);
    expect(seconds(values.gateway.readTimeout)).toBe(62 * 60);
    expect(seconds(values.gateway.writeTimeout)).toBe(62 * 60);
    expect(seconds(values.faasnetes.readTimeout)).toBeGreaterThan(upstream);
    expect(seconds(values.faasnetes.writeTimeout)).toBeGreaterThan(upstream);
    for (const fn of stack.functions) expect(seconds(fn.environment.exec_timeout!), fn.name).toBeLessThanOrEqual(upstream);
    const deployDoc = readFileSync('docs/deploy.md', 'utf8');
    expect(deployDoc).toContain('upstream_timeout=61m');
    expect(deployDoc).toContain('read_timeout=write_timeout=62m');
    expect(values.functionNamespace).toBe('openfaas-fn');
  });

  it('openfaas-values.yaml sets only keys the current chart reads, and says which change the whole installation', () => {
    const read = new Set((JSON.parse(readFileSync('test/fixtures/openfaas-chart-values-read.json', 'utf8')) as { keys: string[] }).keys);
    const leaves = (o: Obj, prefix = ''): string[] =>
      Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) ? leaves(v as Obj, `${prefix}${k}.`) : [`${prefix}${k}`]));
    for (const key of leaves(values)) expect(read.has(key), `${key} is not read by the chart`).toBe(true);
    // Settings that would quietly change the platform for other tenants are not set at all.
    for (const key of ['async', 'gateway.scaleFromZero', 'functions.httpProbe', 'functions.setNonRootUser', 'functions.imagePullPolicy']) expect(leaves(values), key).not.toContain(key);
    const text = readFileSync(path.join(K8S, 'openfaas-values.yaml'), 'utf8');
    const wide = text.indexOf('INSTALLATION-WIDE');
    expect(wide).toBeGreaterThan(0);
    for (const key of ['upstreamTimeout:', 'exposeServices:']) expect(text.indexOf(key), key).toBeGreaterThan(wide);
  });

  it('stack.yml names only handlers, templates and secrets that exist', () => {
    expect(stack.functions.map((f) => f.name).sort()).toEqual([...FUNCTIONS].sort());
    expect(stack.templates).toEqual([]); // a local `source` makes faas-cli run `git clone ./…` and fail
    for (const c of stack.copy) expect(existsSync(c), c).toBe(true);
    for (const fn of stack.functions) {
      expect(existsSync(path.join(fn.handler, 'handler.ts')), fn.name).toBe(true);
      // faas-cli reads a function's template from ./template/<lang>/ only.
      const template = path.join('template', fn.lang);
      expect(existsSync(path.join(template, 'Dockerfile'))).toBe(true);
      expect(parseYaml(readFileSync(path.join(template, 'template.yml'), 'utf8')).language).toBe(fn.lang);
      for (const s of fn.secrets) expect(secretFiles, `${fn.name} secret ${s}`).toContain(s);
      const dockerfile = readFileSync(path.join(template, 'Dockerfile'), 'utf8');
      for (const arg of Object.keys(fn.buildArgs)) expect(dockerfile, `${fn.name} build arg ${arg}`).toMatch(new RegExp(`^ARG ${arg}\\b`, 'm'));
    }
  });

  it("stack.yml's environment holds configuration variables only (the workload timeouts included: the runtime reads them)", () => {
    for (const fn of stack.functions) {
      for (const key of Object.keys(fn.environment)) expect(configNames.has(key), `${fn.name}: ${key}`).toBe(true);
    }
  });

  it('labels stay within Community Edition limits', () => {
    expect(stack.functions.length).toBeLessThanOrEqual(15);
    for (const fn of stack.functions) {
      const min = Number(fn.labels['com.openfaas.scale.min']);
      const max = Number(fn.labels['com.openfaas.scale.max']);
      expect(min, fn.name).toBeGreaterThanOrEqual(1);
      expect(max, fn.name).toBeLessThanOrEqual(5);
      expect(min).toBeLessThanOrEqual(max);
      expect(Object.keys(fn.labels).filter((l) => /^com\.openfaas\.scale\.(type|target|zero)/.test(l)), fn.name).toEqual([]);
      expect((fn.annotations.topic ?? '').includes(','), `${fn.name}: CE allows one topic`).toBe(false);
    }
  });

  it('the optional KEDA ScaledObject scales the function subscribed to the transcode queue, within CE limits', () => {
    const keda = loadDocs(path.join(K8S, 'keda/transcoder-scaledobject.yaml'));
    const so = keda.find((d) => d.kind === 'ScaledObject')!;
    expect(subscribers(stack, 'transcode')).toEqual([so.spec.scaleTargetRef.name]);
    const fn = stack.functions.find((f) => f.name === so.spec.scaleTargetRef.name)!;
    expect(so.spec.minReplicaCount).toBe(Number(fn.labels['com.openfaas.scale.min']));
    expect(so.spec.maxReplicaCount).toBe(Number(fn.labels['com.openfaas.scale.max']));
    expect(so.spec.triggers[0].metadata.stream).toBe(TRANSCODE_STREAM);
    expect(so.spec.triggers[0].metadata.address).toBe(`${configMap.data.REDIS_HOST}:${configMap.data.REDIS_PORT}`);
    const auth = keda.find((d) => d.kind === 'TriggerAuthentication')!;
    expect(so.spec.triggers[0].authenticationRef.name).toBe(auth.metadata.name);
    expect(secretFiles).toContain(auth.spec.secretTargetRef[0].name);
  });
});
