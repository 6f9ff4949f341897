import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, describeVariables, loadConfig } from '../shared/platform/config.js';

const SECRET = 'x'.repeat(32);
const noSecrets = mkdtempSync(path.join(tmpdir(), 'pv-nosecrets-'));
const load = (env: Record<string, string>) => loadConfig({ HMAC_SECRET: SECRET, ...env }, { secretsDir: noSecrets });

describe('config', () => {
  it('applies the spec defaults and derives the media directories', () => {
    const c = load({});
    expect(c.port).toBe(3000);
    expect(c.mediaRoot).toBe('/mnt/media');
    expect(c.uploadDir).toBe('/mnt/media/uploads');
    expect(c.videoDir).toBe('/mnt/media/videos');
    expect(c.auditDir).toBe('/mnt/media/audit');
    expect(c.tokenExpirySeconds).toBe(300);
    expect(c.transcode.renditions).toEqual(['240p', '360p', '480p', '720p', '1080p']);
    expect(c.maxUploadBytes).toBe(20 * 1024 ** 3);
  });

  it.each([
    [{ HMAC_SECRET: '' }, 'HMAC_SECRET'],
    [{ HMAC_SECRET: 'short' }, 'HMAC_SECRET'],
    [{ RENDITIONS: '999p' }, 'RENDITIONS'],
    [{ RENDITIONS: '240p,240p' }, 'RENDITIONS'],
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ TOKEN_EXPIRY_SECONDS: '301' }, 'TOKEN_EXPIRY_SECONDS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ TRUST_PROXY: 'maybe' }, 'TRUST_PROXY'],
    [{ REDIS_URL: 'not a url' }, 'REDIS_URL'],
    [{ LOCAL_REPLICAS: 'tus-upload' }, 'LOCAL_REPLICAS'],
    [{ REDIS_SENTINELS: 'sentinel-0' }, 'REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: 'sentinel-0:26379,sentinel-1:99999' }, 'REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_NAME: 'my master' }, 'REDIS_SENTINEL_NAME'],
  ])('rejects %o naming %s', (env, variable) => {
    let error: unknown;
    try {
      load(env);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).variable).toBe(variable);
    expect((error as Error).message).toMatch(new RegExp(`^invalid configuration: ${variable} `));
    expect((error as Error).message).not.toContain('\n');
  });

  it('production with direct audit submission configured refuses an empty AUDIT_INTAKE_KEY; a short one is refused anywhere', () => {
    const prod = { NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET };
    for (const wiring of [{ AUDIT_INTAKE_PORT: '8081' }, { AUDIT_WRITER_URL: 'tcp://audit-writer:8081' }] as Record<string, string>[]) {
      expect(() => load({ ...prod, ...wiring })).toThrow(/^invalid configuration: AUDIT_INTAKE_KEY is required in production/);
      expect(load({ ...prod, ...wiring, AUDIT_INTAKE_KEY: 'k'.repeat(32) }).auditIntakeKey).toBe('k'.repeat(32));
      expect(load(wiring).auditIntakeKey).toBeNull();
    }
    expect(load(prod).auditIntakeKey).toBeNull();
    expect(() => load({ AUDIT_INTAKE_KEY: 'short' })).toThrow(/^invalid configuration: AUDIT_INTAKE_KEY must be empty or at least 32 bytes$/);
  });

  it('never prints a secret value in its error', () => {
    expect(() => load({ HMAC_SECRET: 'my-short-secret' })).toThrow(/^(?!.*my-short-secret)/s);
  });

  it('reads secrets from OpenFaaS secret files when the environment has none', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-secrets-'));
    writeFileSync(path.join(dir, 'hmac-secret'), `${'s'.repeat(40)}\n`);
    writeFileSync(path.join(dir, 'redis-password'), 'pw');
    const c = loadConfig({}, { secretsDir: dir });
    expect(c.hmacSecret).toBe('s'.repeat(40));
    expect(c.redis.password).toBe('pw');
  });

  it('connects through Sentinel only when REDIS_SENTINELS is set, its password a secret of its own', () => {
    expect(load({}).redis.sentinel).toBeNull();
    const dir = mkdtempSync(path.join(tmpdir(), 'pv-secrets-'));
    writeFileSync(path.join(dir, 'redis-sentinel-password'), 'sentinel-pw\n');
    const c = loadConfig({ HMAC_SECRET: SECRET, REDIS_SENTINELS: ' redis-0.redis:26379, [::1]:26380 ', REDIS_PASSWORD: 'pw' }, { secretsDir: dir });
    expect(c.redis.sentinel).toEqual({ sentinels: [{ host: 'redis-0.redis', port: 26379 }, { host: '::1', port: 26380 }], name: 'pulsevault', password: 'sentinel-pw' });
    expect(c.redis.password).toBe('pw');
  });

  it('requires what a process asks for instead of HMAC_SECRET (services and CLIs)', () => {
    expect(() => loadConfig({ HMAC_SECRET: SECRET }, { secretsDir: noSecrets, require: ['AUDIT_SIGNING_KEY'] })).toThrow(/AUDIT_SIGNING_KEY is required/);
    expect(loadConfig({ METADATA_DSN: 'postgres://localhost/x' }, { secretsDir: noSecrets, require: ['METADATA_DSN'] }).hmacSecret).toBe('');
  });

  it('.env.example lists every variable with its default', () => {
    const lines = readFileSync('.env.example', 'utf8').split('\n');
    const entries = new Map(lines.filter((l) => /^[A-Za-z0-9_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    for (const v of describeVariables()) {
      expect(entries.has(v.name), `${v.name} missing from .env.example`).toBe(true);
      expect(entries.get(v.name), `${v.name} default`).toBe(v.default);
      const i = lines.findIndex((l) => l.startsWith(`${v.name}=`));
      expect(lines[i - 1], `${v.name} needs a comment line`).toMatch(/^# \S/);
    }
    expect([...entries.keys()].sort()).toEqual(describeVariables().map((v) => v.name).sort());
  });

  it('stops a function at start-up with one line naming the variable', async () => {
    const run = promisify(execFile);
    const err = await run(process.execPath, ['dist/templates/pulsevault-node20/runtime/main.js', 'dist/functions/sign/handler.js'], {
      env: { PATH: process.env.PATH, RENDITIONS: '999p', HMAC_SECRET: SECRET, SECRETS_DIR: noSecrets },
    }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(78);
    expect(err?.stderr.trim().split('\n')).toHaveLength(1);
    expect(err?.stderr).toMatch(/^invalid configuration: RENDITIONS /);
  });
});
