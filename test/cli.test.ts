/**
 * The `pulsevault` launcher (bin/pulsevault.js), spawned as a user runs it: the package's
 * bin, a build only when the sources changed, the same local data as `npm start`, one
 * line and a non-zero exit for what the operator must fix, and every `pulsevault` line
 * the documentation shows.
 */
import { accessSync, constants, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_MEDIA_ROOT } from '../services/devstack/local-defaults.js';
import { freePort } from '../services/devstack/supervisor.js';
import { bashBlocks, documentationFiles } from './helpers/markdown.js';
import { runToExit, type Finished } from './helpers/node-process.js';
import { createTestDatabase, type TestDatabase } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/secrets.js';

const REPO = process.cwd();
const LAUNCHER = path.join(REPO, 'bin/pulsevault.js');

/** Runs the launcher in `cwd` as a user would (no test secrets in its environment). */
function pulsevault(args: string[], env: Record<string, string> = {}, cwd = REPO, launcher = LAUNCHER): Promise<Finished> {
  return runToExit(process.execPath, [launcher, ...args], env, cwd);
}

/** One line on stderr, no stack frame. */
function expectOneLine(run: Finished): void {
  expect(run.stderr.trimEnd().split('\n'), run.stderr).toHaveLength(1);
  expect(run.stderr).not.toMatch(/^\s+at /m);
}

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(path.join(tmpdir(), 'pv-cli-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the pulsevault bin', () => {
  it('is the package bin, an executable node script', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
    expect(pkg.bin).toEqual({ pulsevault: 'bin/pulsevault.js' });
    expect(readFileSync(LAUNCHER, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env node');
    accessSync(LAUNCHER, constants.X_OK);
    // npm run requeue / pulsevault go through the same launcher (and so the same defaults).
    expect(pkg.scripts.requeue).toBe('node bin/pulsevault.js requeue');
    expect(pkg.scripts.pulsevault).toBe('node bin/pulsevault.js');
  });

  it('builds only when dist is missing or older than a source', async () => {
    // A project of the launcher's shape, small enough to compile in a few seconds.
    const project = path.join(scratch, 'project');
    mkdirSync(path.join(project, 'bin'), { recursive: true });
    mkdirSync(path.join(project, 'scripts'));
    mkdirSync(path.join(project, 'services/devstack'), { recursive: true });
    cpSync(LAUNCHER, path.join(project, 'bin/pulsevault.js'));
    symlinkSync(path.join(REPO, 'node_modules'), path.join(project, 'node_modules'));
    writeFileSync(path.join(project, 'package.json'), '{"type":"module"}');
    writeFileSync(path.join(project, 'tsconfig.build.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', target: 'es2022', outDir: 'dist', rootDir: '.', types: ['node'], skipLibCheck: true }, include: ['scripts/**/*.ts', 'services/**/*.ts'] }));
    writeFileSync(path.join(project, 'services/devstack/local-defaults.ts'), 'export function applyLocalDefaults(env: NodeJS.ProcessEnv): void { env.SEEN_DEFAULTS = "yes"; }\n');
    const source = path.join(project, 'scripts/pulsevault.ts');
    writeFileSync(source, 'process.stdout.write(`v1 ${process.env.SEEN_DEFAULTS}\\n`);\n');
    const launcher = path.join(project, 'bin/pulsevault.js');

    const first = await pulsevault([], {}, project, launcher);
    expect(first.stdout).toBe('v1 yes\n');
    expect(first.stderr).toContain('building');

    const second = await pulsevault([], {}, project, launcher);
    expect(second).toEqual({ code: 0, stdout: 'v1 yes\n', stderr: '' });

    writeFileSync(source, 'process.stdout.write(`v2 ${process.env.SEEN_DEFAULTS}\\n`);\n');
    const later = new Date(Date.now() + 60_000); // newer than the build, whatever the clock's resolution
    utimesSync(source, later, later);
    const third = await pulsevault([], {}, project, launcher);
    expect(third.stdout).toBe('v2 yes\n');
    expect(third.stderr).toContain('building');
  });
});

describe('local defaults, as npm start', () => {
  it('MEDIA_ROOT is ./data of the checkout when unset, from any directory', async () => {
    expect(LOCAL_MEDIA_ROOT).toBe(path.join(REPO, 'data'));
    const run = await pulsevault(['audit', 'verify'], { AUDIT_SIGNING_KEY: TEST_AUDIT_KEY }, scratch);
    // Either verdict or the missing-directory line names the directory it read.
    expect(run.stdout + run.stderr).toContain(path.join(REPO, 'data', 'audit'));
  });

  it("uses npm start's development audit key from MEDIA_ROOT when AUDIT_SIGNING_KEY is unset", async () => {
    const mediaRoot = path.join(scratch, 'media-with-dev-key');
    mkdirSync(path.join(mediaRoot, 'audit'), { recursive: true });
    const without = await pulsevault(['audit', 'verify'], { MEDIA_ROOT: mediaRoot });
    expect(without.code).toBe(78);
    expect(without.stderr).toContain('AUDIT_SIGNING_KEY is required');

    writeFileSync(path.join(mediaRoot, '.dev-audit-signing-key'), `${'ab'.repeat(32)}\n`);
    const withKey = await pulsevault(['audit', 'verify'], { MEDIA_ROOT: mediaRoot });
    // The key was taken (no 78); an empty log is reported as nothing verified, never as an intact chain.
    expect(withKey.code, withKey.stderr).toBe(66);
    expectOneLine(withKey);
    expect(withKey.stderr).toContain(`no audit files in ${path.join(mediaRoot, 'audit')}: nothing verified`);
    expect(withKey.stdout).not.toContain('intact');

    // Production never takes a development key, and keeps its own MEDIA_ROOT default.
    const production = await pulsevault(['audit', 'verify'], { MEDIA_ROOT: mediaRoot, NODE_ENV: 'production' });
    expect(production.code).toBe(78);
    const productionRoot = await pulsevault(['audit', 'verify'], { NODE_ENV: 'production', AUDIT_SIGNING_KEY: TEST_AUDIT_KEY });
    expect(productionRoot.stdout + productionRoot.stderr).toContain('/mnt/media/audit');
  });
});

describe('what the operator must fix: one line, non-zero exit', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.close());

  it('a MEDIA_ROOT that does not exist', async () => {
    const missing = path.join(scratch, 'no-such-media');
    const requeue = await pulsevault(['requeue'], { MEDIA_ROOT: missing, REDIS_URL: redis.url });
    expect(requeue.code).toBe(66);
    expectOneLine(requeue);
    expect(requeue.stderr).toContain(path.join(missing, 'videos'));

    const audit = await pulsevault(['audit', 'verify'], { MEDIA_ROOT: missing, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY });
    expect(audit.code).toBe(66);
    expectOneLine(audit);
    expect(audit.stdout).not.toContain('chain intact');

    const scrub = await pulsevault(['scrub'], { MEDIA_ROOT: missing });
    expect(scrub.code).toBe(66);
    expectOneLine(scrub);
  });

  it('a Redis that does not answer (requeue)', async () => {
    const mediaRoot = path.join(scratch, 'media-for-requeue');
    mkdirSync(path.join(mediaRoot, 'videos'), { recursive: true });
    const run = await pulsevault(['requeue', '--dry-run'], { MEDIA_ROOT: mediaRoot, REDIS_URL: `redis://:a-password@127.0.0.1:${await freePort()}` });
    expect(run.code).toBe(69);
    expectOneLine(run);
    expect(run.stderr).toContain('does not answer');
    expect(run.stderr).not.toContain('a-password');
  });

  it('`pulsevault audit` without a subcommand: one usage line, 64', async () => {
    for (const args of [['audit'], ['audit', 'check'], ['audit', 'verify', '--from', 'March']]) {
      const run = await pulsevault(args, { MEDIA_ROOT: scratch, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY });
      expect(run.code, args.join(' ')).toBe(64);
      expectOneLine(run);
      expect(run.stderr).toMatch(/^pulsevault audit: .+ \(usage: pulsevault audit verify\|reindex \[--from YYYY-MM-DD\] \[--to YYYY-MM-DD\] \[--category access\|/);
    }
  });

  it('bad configuration names the variable', async () => {
    const run = await pulsevault(['requeue'], { MEDIA_ROOT: scratch, TOKEN_EXPIRY_SECONDS: 'soon' });
    expect(run.code).toBe(78);
    expectOneLine(run);
    expect(run.stderr).toContain('TOKEN_EXPIRY_SECONDS');
  });
});

describe('every pulsevault line the documentation shows', () => {
  let redis: TestRedis;
  let database: TestDatabase;
  beforeAll(async () => {
    [redis, database] = await Promise.all([startRedis(), createTestDatabase()]);
  });
  afterAll(async () => {
    await Promise.all([redis?.close(), database?.drop()]);
  });

  // `[VAR=value …] [npx ]pulsevault args…  [| …] [# comment]`; the environment is the test's own.
  const COMMAND = /^(?:[A-Z_]+=\S+\s+)*(?:npx\s+)?pulsevault\s+([^|#]*)/;
  const shown = documentationFiles().flatMap((file) =>
    bashBlocks(file).flatMap((b) =>
      b.lines.flatMap((line) => {
        const args = COMMAND.exec(line)?.[1]?.trim();
        return args ? [{ file, line, args: args.split(/\s+/) }] : [];
      }),
    ),
  );

  it('docs/operations.md lists every command in its table', () => {
    const table = readFileSync('docs/operations.md', 'utf8');
    const commands = readdirSync('scripts/commands').filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
    expect(commands.length).toBeGreaterThanOrEqual(7);
    for (const c of commands) expect(table, c).toMatch(new RegExp(`^\\| \`${c}[ \`]`, 'm'));
  });

  it('finds them (the extraction works)', () => {
    const commands = new Set(shown.map((s) => s.args[0]));
    for (const c of ['--help', 'requeue', 'scrub', 'audit', 'reindex', 'console-export']) expect(commands, c).toContain(c);
  });

  it('runs each of them successfully (an audit verify of a range holding no file: its documented 66, nothing verified)', async () => {
    const mediaRoot = path.join(scratch, 'docs-media');
    mkdirSync(path.join(mediaRoot, 'videos'), { recursive: true });
    mkdirSync(path.join(mediaRoot, 'audit'), { recursive: true });
    const cwd = path.join(scratch, 'docs-cwd');
    mkdirSync(cwd, { recursive: true });
    const env = { MEDIA_ROOT: mediaRoot, REDIS_URL: redis.url, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, HMAC_SECRET: TEST_HMAC_SECRET, METADATA_DSN: database.dsn, LOG_LEVEL: 'warn' };
    // Each command line once (several pages show the same one), three at a time: they read an empty volume,
    // and each run is mostly the launcher's start-up. One after another they took 23 s of the suite.
    const distinct = [...new Map(shown.map((s) => [s.args.join(' '), s])).values()];
    const runOne = async ({ file, line, args }: (typeof shown)[number]) => {
      expect(args.join(' '), `${file}: ${line} (quoted arguments are not supported here)`).not.toMatch(/["']/);
      const run = await pulsevault(args, env, cwd);
      const nothingToVerify = args[0] === 'audit' && run.code === 66 && run.stderr.includes('nothing verified');
      expect(nothingToVerify ? 0 : run.code, `${file}: ${line}\n${run.stderr}`).toBe(0);
    };
    const queue = [...distinct];
    await Promise.all(Array.from({ length: 3 }, async () => {
      for (let next = queue.shift(); next; next = queue.shift()) await runOne(next);
    }));
    expect(existsSync(path.join(cwd, 'build/console/nginx.conf'))).toBe(true);
  });
});
