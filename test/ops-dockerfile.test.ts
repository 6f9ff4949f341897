/**
 * Container conventions, read from the Dockerfiles (no image builds here: no registry
 * access for base images). The function template follows the OpenFaaS of-watchdog
 * pattern; both images ship compiled JavaScript and production dependencies only, as
 * a non-root user.
 */
import { execSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
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
