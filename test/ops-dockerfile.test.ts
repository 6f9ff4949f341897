/**
 * Container conventions, read from the Dockerfiles (no image builds here: no registry
 * access for base images). The function template follows the OpenFaaS of-watchdog
 * pattern; both Node images ship compiled JavaScript and production dependencies only, as
 * a non-root user. The media edge's image is nginx-unprivileged plus the decryption module,
 * built against the binary it ships.
 */
import { execFileSync, execSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { K8S_MEDIA_EDGE } from '../services/media-edge/nginx-config.js';
import { readStack } from '../shared/platform/openfaas-stack.js';

interface Stage {
  from: string;
  alias: string | null;
  instructions: { op: string; args: string }[];
}

/** Instructions per build stage (line continuations joined, comments dropped). */
function stages(file: string): { args: Map<string, string>; stages: Stage[] } {
  const lines = readFileSync(file, 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const globalArgs = new Map<string, string>();
  const out: Stage[] = [];
  for (const line of lines) {
    const [, op, args] = /^(\w+)\s+(.*)$/.exec(line)!;
    const upper = op!.toUpperCase();
    if (upper === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args!)!;
      out.push({ from: m[1]!, alias: m[2] ?? null, instructions: [] });
    } else if (out.length === 0 && upper === 'ARG') {
      const [k, v] = args!.split('=');
      globalArgs.set(k!, v ?? '');
    } else {
      out.at(-1)!.instructions.push({ op: upper, args: args! });
    }
  }
  return { args: globalArgs, stages: out };
}

const env = (stage: Stage) => {
  const vars = new Map<string, string>();
  for (const i of stage.instructions.filter((x) => x.op === 'ENV')) {
    for (const m of i.args.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)) vars.set(m[1]!, m[2]!.replace(/^"|"$/g, ''));
  }
  return vars;
};
const last = <T>(xs: T[]) => xs[xs.length - 1];

function expectShipsCompiledProductionCode(ship: Stage): void {
  const runs = ship.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  expect(runs.some((r) => /npm ci\b.*--omit=dev/.test(r)), 'production dependencies only').toBe(true);
  expect(runs.some((r) => /\btsc\b/.test(r)), 'no compiling in the shipped stage').toBe(false);
  const copies = ship.instructions.filter((i) => i.op === 'COPY').map((i) => i.args);
  // Only the compiled dist/ comes from the build stage; no TypeScript sources, no dev node_modules.
  const fromBuild = copies.filter((c) => c.startsWith('--from=build'));
  expect(fromBuild.some((c) => /\/dist \.\/dist$/.test(c))).toBe(true);
  for (const c of fromBuild) expect(c, c).not.toMatch(/node_modules|\.ts\b|shared|functions/);
  for (const c of copies.filter((x) => !x.startsWith('--from='))) expect(c, c).not.toMatch(/^(shared|functions|services|scripts|\.)\b/);
  // The last USER is a numeric non-root uid, and nothing runs as root after it.
  const users = ship.instructions.map((i, n) => ({ ...i, n })).filter((i) => i.op === 'USER');
  const user = last(users);
  expect(user?.args).toMatch(/^[1-9]\d*(:[1-9]\d*)?$/);
  expect(ship.instructions.slice(user!.n).some((i) => i.op === 'RUN')).toBe(false);
  expect(env(ship).get('NODE_ENV')).toBe('production');
}

describe('function template (templates/pulsevault-node20/Dockerfile)', () => {
  const { args, stages: all } = stages('templates/pulsevault-node20/Dockerfile');
  const ship = last(all)!;
  const vars = env(ship);

  it('runs the runtime itself as PID 1 on OpenFaaS’ port 8080, with no of-watchdog in front (it logs query strings: tokens)', () => {
    expect(all.some((s) => /of-watchdog/.test(s.from))).toBe(false);
    expect(ship.instructions.some((i) => /fwatchdog/.test(i.args))).toBe(false);
    expect(vars.get('PORT')).toBe('8080');
    expect(vars.get('HOST')).toBe('0.0.0.0');
    expect([...vars.keys()].filter((k) => ['fprocess', 'mode', 'upstream_url'].includes(k))).toEqual([]);
  });

  it('CMD starts the compiled runtime with the compiled handler, at paths the build produces', () => {
    const [node, runtime, handler] = JSON.parse(last(ship.instructions.filter((i) => i.op === 'CMD'))!.args) as string[];
    expect(node).toBe('node');
    expect(runtime).toBe('dist/templates/pulsevault-node20/runtime/main.js');
    expect(handler).toBe('dist/functions/handler/handler.js');
    // The runtime is what `npm start` runs too (the build of this repository compiles it to the same path).
    expect(existsSync(runtime!)).toBe(true);
    // The build stage moves the handler folder to functions/handler, next to shared/ as in the repository.
    const build = all.find((s) => s.alias === 'build')!.instructions.map((i) => i.args).join('\n');
    expect(build).toMatch(/mv staging functions\/handler/);
    expect(build).toMatch(/mv staging\/shared \.\/shared/);
  });

  it('ships compiled JavaScript with production dependencies only, as a non-root user', () => {
    expectShipsCompiledProductionCode(ship);
    expect(last(ship.instructions.filter((i) => i.op === 'USER'))!.args).toBe('1000:1000');
  });

  it('installs ffmpeg only when INSTALL_FFMPEG=true, which the functions that need it set', () => {
    const arg = ship.instructions.find((i) => i.op === 'ARG' && i.args.startsWith('INSTALL_FFMPEG'));
    expect(arg?.args).toBe('INSTALL_FFMPEG=false');
    const install = ship.instructions.find((i) => i.op === 'RUN' && i.args.includes('ffmpeg'))!;
    expect(install.args).toMatch(/if \[ "\$\{INSTALL_FFMPEG\}" = "true" \]/);
    expect(install.args).toMatch(/rm -rf \/var\/lib\/apt\/lists/);
    const stack = readStack('stack.yml');
    const withFfmpeg = stack.functions.filter((f) => f.buildArgs.INSTALL_FFMPEG === 'true').map((f) => f.name).sort();
    expect(withFfmpeg).toEqual(['finalize', 'transcoder']);
  });
});

/** Bytes of the files under `dir` (links not followed). */
function treeBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    total += entry.isDirectory() ? treeBytes(file) : lstatSync(file).size;
  }
  return total;
}

describe('function image dependencies', () => {
  /** The ship stage's dependency install, as written (less the cache clean: that would be this machine's cache). */
  const install = stages('templates/pulsevault-node20/Dockerfile')
    .stages.at(-1)!
    .instructions.find((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args))!
    .args.split('&&')
    .map((c) => c.trim())
    .filter((c) => !c.startsWith('npm cache'));

  it('hold no browser bundle: the console serves those from devDependencies', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const bundle of ['dashjs', 'hls.js', 'tus-js-client']) {
      expect(pkg.dependencies, bundle).not.toHaveProperty(bundle);
      expect(pkg.devDependencies, bundle).toHaveProperty(bundle);
    }
  });

  // The ship stage's install replayed from the lockfile (offline from the npm cache where it can): ~15 s quiet.
  it('install to at most 40 MB of node_modules in the ship stage', { timeout: 300_000 }, () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-ship-'));
    try {
      copyFileSync('package.json', path.join(dir, 'package.json'));
      copyFileSync('package-lock.json', path.join(dir, 'package-lock.json'));
      for (const command of install) execSync(command.replace(/^npm ci\b/, 'npm ci --prefer-offline'), { cwd: dir, stdio: 'pipe', timeout: 280_000 });
      expect(existsSync(path.join(dir, 'node_modules', 'dashjs'))).toBe(false);
      expect(existsSync(path.join(dir, 'node_modules', 'ioredis')), 'a production dependency is installed').toBe(true);
      const mb = treeBytes(path.join(dir, 'node_modules')) / 1e6;
      expect(mb, `node_modules is ${mb.toFixed(1)} MB`).toBeLessThanOrEqual(40);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('services image (services/Dockerfile)', () => {
  const { stages: all } = stages('services/Dockerfile');

  it('ships compiled JavaScript with production dependencies only, as uid 1000', () => {
    const ship = last(all)!;
    expectShipsCompiledProductionCode(ship);
    expect(last(ship.instructions.filter((i) => i.op === 'USER'))!.args).toBe('1000:1000');
    expect(all.find((s) => s.alias === 'build')!.instructions.some((i) => i.op === 'RUN' && i.args.includes('tsc -p tsconfig.build.json'))).toBe(true);
  });

  it('is the image the k8s Deployments and CronJobs run', () => {
    for (const file of ['k8s/queue-connector.yaml', 'k8s/audit-writer.yaml', 'k8s/scrub-cronjob.yaml', 'k8s/mirror/reindex-cronjob.yaml']) {
      expect(readFileSync(file, 'utf8'), file).toMatch(/image: registry\.local:5000\/pulsevault-services:latest/);
    }
  });
});

describe('media edge image (services/media-edge/Dockerfile)', () => {
  const DOCKERFILE = 'services/media-edge/Dockerfile';
  const { args, stages: all } = stages(DOCKERFILE);
  const build = all.find((s) => s.alias === 'build')!;
  const ship = last(all)!;
  const runs = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  const configure = runs.find((r) => r.includes('./configure'))!;
  /** Where the build stage puts the module's source. */
  const moduleDir = build.instructions.find((i) => i.op === 'COPY' && i.args.startsWith('services/media-edge/decrypt-module '))!.args.split(/\s+/)[1]!;
  const edgePod = parseAllDocuments(readFileSync('k8s/media-edge.yaml', 'utf8'))
    .map((d) => d.toJS())
    .find((d) => d.kind === 'Deployment' && d.metadata.name === 'media-edge').spec.template.spec;

  it('is nginx-unprivileged at one exact release, named only in its ARG, the build stage on the same image', () => {
    // The release the module is verified against: a moving tag would change the nginx under it.
    const release = /^nginxinc\/nginx-unprivileged:(\d+\.\d+\.\d+)-alpine$/.exec(args.get('NGINX_IMAGE') ?? '')?.[1];
    expect(release, args.get('NGINX_IMAGE')).toBeDefined();
    expect(readFileSync(DOCKERFILE, 'utf8').split(release!).length - 1, `${release} is written once`).toBe(1);
    expect(build.from).toBe('${NGINX_IMAGE}');
    expect(ship.from).toBe(build.from);
    // The source of the shipped binary (the base image's NGINX_VERSION), checked against its published SHA-512.
    expect(runs.some((r) => r.includes('https://nginx.org/download/nginx-${NGINX_VERSION}.tar.gz') && r.includes('sha512sum -c'))).toBe(true);
  });

  it("configures with the shipped binary's own arguments plus the module's source, then makes only the modules", () => {
    expect(configure).toContain(`--add-dynamic-module=${moduleDir}"`);
    expect(configure).toMatch(/&& make (-j\S+ )?modules\s+&&/);
    // The eval as written, against an nginx that reports arguments the way Alpine's does (quoted flags)
    // and a configure that prints what it was given: each argument arrives whole.
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-edge-configure-'));
    try {
      const reported = "--prefix=/etc/nginx --with-compat --with-cc-opt='-Os -fstack-clash-protection -Wformat' --with-ld-opt='-Wl,--as-needed,-O1 -Wl,-z,pie'";
      writeFileSync(path.join(dir, 'nginx'), `#!/bin/sh\necho 'nginx version: nginx/0.0.0' >&2\necho "configure arguments: ${reported}" >&2\n`);
      writeFileSync(path.join(dir, 'configure'), '#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done\n');
      for (const f of ['nginx', 'configure']) chmodSync(path.join(dir, f), 0o755);
      const evalStep = configure.split(/\s+&&\s+/).find((step) => step.startsWith('eval '))!;
      const received = execFileSync('sh', ['-c', evalStep], { cwd: dir, env: { PATH: `${dir}:${process.env.PATH}` }, encoding: 'utf8' });
      expect(received.trimEnd().split('\n')).toEqual(['--prefix=/etc/nginx', '--with-compat', '--with-cc-opt=-Os -fstack-clash-protection -Wformat', '--with-ld-opt=-Wl,--as-needed,-O1 -Wl,-z,pie', `--add-dynamic-module=${moduleDir}`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ships only the module, in the directory K8S_MEDIA_EDGE loads it from, as the non-root user the pod runs', () => {
    const loaded = K8S_MEDIA_EDGE.decryptModule!;
    // make names the module after ngx_module_name in the module's nginx config file.
    const moduleName = /^ngx_module_name=(\S+)$/m.exec(readFileSync('services/media-edge/decrypt-module/config', 'utf8'))![1]!;
    expect(`${moduleName}.so`).toBe(path.basename(loaded));
    const kept = new RegExp(`\\bcp objs/${moduleName}\\.so (\\S+)`).exec(configure)![1]!;
    expect(ship.instructions.map((i) => i.op)).toEqual(['COPY', 'USER']);
    const [from, source, target] = ship.instructions[0]!.args.split(/\s+/);
    expect(from).toBe('--from=build');
    expect(source).toBe(kept);
    expect(path.basename(source!)).toBe(path.basename(loaded));
    // Into the directory (trailing slash), under its own name.
    expect(target).toBe(`${path.dirname(loaded)}/`);
    const user = ship.instructions[1]!.args;
    expect(user).toMatch(/^[1-9]\d*(:[1-9]\d*)?$/);
    expect(Number(user.split(':')[0])).toBe(edgePod.securityContext.runAsUser);
  });

  it("is the image both of the media edge's containers run, under the name its build line and the kustomization example give it", () => {
    const images = [...edgePod.initContainers, ...edgePod.containers].map((c: { image: string }) => c.image);
    expect(images).toHaveLength(2);
    for (const image of images) expect(image).toBe('registry.local:5000/pulsevault-media-edge:latest');
    const name = 'pulsevault-media-edge';
    // Every documented build of this Dockerfile tags that name (docs/deploy.md's too, once it has one).
    const builds = [DOCKERFILE, 'docs/deploy.md'].flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(/docker build -f services\/media-edge\/Dockerfile -t (\S+) /g)].map((m) => ({ file, tag: m[1]! })),
    );
    expect(builds.length).toBeGreaterThan(0);
    for (const { file, tag } of builds) expect(/^(?:[^/]+\/)*([^/:]+):[^/]+$/.exec(tag)?.[1], `${file}: ${tag}`).toBe(name);
    const kustomization = readFileSync('k8s/kustomization.yaml', 'utf8');
    expect(kustomization).toContain(`#   - name: registry.local:5000/${name}\n#     newName: registry.example.org/${name}\n`);
  });
});
