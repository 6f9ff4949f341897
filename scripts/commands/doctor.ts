/**
 * `pulsevault doctor [k8s-dir] [--stack stack.yml]`: the pre-deploy check. Renders the
 * kustomization as `kubectl apply -k` would, then names everything a production start would
 * trip over before anything crash-loops: site block values missing or still examples, and
 * per function and service, the configuration it would refuse to start with (auth included),
 * given exactly what stack.yml and k8s/ give it plus the documented secrets.
 * Exit 0 when ready to deploy, 1 with one line per problem otherwise.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createAuthenticator } from '../../shared/auth/jwt.js';
import { ConfigError, describeVariables, loadConfig } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { readStack } from '../../shared/platform/openfaas-stack.js';
import { functionEnvironment, renderKustomization, serviceDeployment, siteProblems, type Manifest } from '../deployment.js';

export const summary = 'pre-deploy check: renders k8s/ and names every missing site setting or secret a production start would refuse';

/** The long-running services k8s/ deploys beside the functions. */
const SERVICES = ['queue-connector', 'audit-writer'];

export async function run(args: string[]): Promise<number> {
  const stackAt = args.indexOf('--stack');
  const stackFile = stackAt >= 0 ? args[stackAt + 1] : 'stack.yml';
  const positional = stackAt >= 0 ? args.filter((_, i) => i !== stackAt && i !== stackAt + 1) : args;
  if (!stackFile || positional.length > 1 || positional.some((a) => a.startsWith('-'))) {
    process.stderr.write('usage: pulsevault doctor [k8s-dir] [--stack stack.yml]\n');
    return 64;
  }
  const dir = positional[0] ?? 'k8s';
  let rendered: Manifest[];
  try {
    rendered = renderKustomization(dir);
  } catch (err) {
    process.stderr.write(`cannot render ${dir} with kubectl kustomize: ${(err as Error).message.split('\n')[0]}\n`);
    return 1;
  }
  const problems = [...siteProblems(rendered), ...workloadProblems(rendered, readStack(stackFile)), ...sentinelProblems(rendered, readStack(stackFile))];
  const secrets = [...new Set(readStack(stackFile).functions.flatMap((f) => f.secrets).concat(SERVICES.flatMap((s) => serviceDeployment(rendered, s).secrets)))].sort();
  if (problems.length > 0) {
    process.stdout.write(`${problems.map((p) => `problem: ${p}`).join('\n')}\n${problems.length} problem(s): fix them before deploying.\n`);
    return 1;
  }
  process.stdout.write(`ok: site block complete; every function and service starts with NODE_ENV=production.\nSecrets to create in openfaas-fn before deploying: ${secrets.join(', ')}\n`);
  return 0;
}

/** Each workload's configuration loaded as it will be in the cluster, with placeholder secret files. */
function workloadProblems(rendered: Manifest[], stack: ReturnType<typeof readStack>): string[] {
  const quiet = createLogger('doctor', 'error');
  const secretFiles = new Set(describeVariables().flatMap((v) => (v.secretFile ? [v.secretFile] : [])));
  const problems: string[] = [];
  const check = (who: string, env: Record<string, string>, secrets: string[], needsAuth: boolean) => {
    for (const s of secrets) if (!secretFiles.has(s)) problems.push(`${who}: mounts secret ${s}, which no configuration variable reads`);
    if (env.NODE_ENV !== 'production') problems.push(`${who}: NODE_ENV is "${env.NODE_ENV ?? ''}", not production`);
    // Secret values are the site's; only their presence matters here.
    const secretsDir = mkdtempSync(path.join(tmpdir(), 'pv-doctor-'));
    try {
      for (const s of secrets) writeFileSync(path.join(secretsDir, s), 'x'.repeat(48));
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
