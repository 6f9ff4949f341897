/** The console's file route (what the gateway serves at /console/) and the local stack's dev token. */
import { createServer, type Server } from 'node:http';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/platform/config.js';
import { toHttpError } from '../shared/platform/errors.js';
import { exportConsole } from '../services/console/export.js';
import { consoleFiles, createConsoleRoute, SECURITY_HEADERS } from '../services/console/route.js';
import { createDevAuth, DEV_ROLES, wantsDevAuth } from '../services/devstack/dev-auth.js';
import { TEST_HMAC_SECRET } from './helpers/stack.js';

const ROOT = process.cwd();

describe('console route', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    const route = createConsoleRoute({ root: ROOT });
    server = createServer((req, res) => {
      Promise.resolve(route(req, res))
        .then((handled) => {
          if (!handled) res.writeHead(404).end('not mine');
        })
        .catch((err: unknown) => {
          const e = toHttpError(err);
          res.writeHead(e.status, e.headers).end(e.code);
        });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it.each([
    ['/console/', 'text/html; charset=utf-8', 'services/console/static/index.html'],
    ['/console/index.html', 'text/html; charset=utf-8', 'services/console/static/index.html'],
    ['/console/app.js', 'text/javascript; charset=utf-8', 'services/console/static/app.js'],
    ['/console/styles.css', 'text/css; charset=utf-8', 'services/console/static/styles.css'],
    ['/console/vendor/tus.min.js', 'text/javascript; charset=utf-8', 'node_modules/tus-js-client/dist/tus.min.js'],
    ['/console/vendor/hls.min.js', 'text/javascript; charset=utf-8', 'node_modules/hls.js/dist/hls.min.js'],
    ['/console/vendor/dash.all.min.js', 'text/javascript; charset=utf-8', 'node_modules/dashjs/dist/modern/umd/dash.all.min.js'],
  ])('GET %s → %s, the file itself, same-origin CSP, no referrer', async (url, type, file) => {
    const res = await fetch(`${base}${url}`, { headers: { 'Accept-Encoding': 'identity' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(type);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(res.headers.get('content-security-policy')).toContain("connect-src 'self'");
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(Buffer.from(await res.arrayBuffer()).equals(await readFile(`${ROOT}/${file}`))).toBe(true);
  });

  it('gzips for clients that accept it, and answers 304 to a matching If-None-Match', async () => {
    const { request } = await import('node:http');
    const raw = await new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
      request(`${base}/console/vendor/hls.min.js`, { headers: { 'Accept-Encoding': 'gzip, br' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      })
        .on('error', reject)
        .end();
    });
    expect(raw.status).toBe(200);
    expect(raw.headers['content-encoding']).toBe('gzip');
    const original = await readFile(`${ROOT}/node_modules/hls.js/dist/hls.min.js`);
    expect(raw.body.length).toBeLessThan(original.length / 2);
    expect(gunzipSync(raw.body).equals(original)).toBe(true);

    const etag = raw.headers.etag as string;
    const again = await fetch(`${base}/console/vendor/hls.min.js`, { headers: { 'If-None-Match': `"other", ${etag}` } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
  });

  it('HEAD has the headers and no body', async () => {
    const res = await fetch(`${base}/console/app.js`, { method: 'HEAD', headers: { 'Accept-Encoding': 'identity' } });
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('content-length'))).toBe((await readFile(`${ROOT}/services/console/static/app.js`)).length);
    expect(await res.text()).toBe('');
  });

  it('redirects /console to /console/', async () => {
    const res = await fetch(`${base}/console`, { redirect: 'manual' });
    expect(res.status).toBe(308);
    expect(res.headers.get('location')).toBe('/console/');
  });

  it.each(['/console/../package.json', '/console/%2e%2e/package.json', '/console/route.ts', '/console/static/app.js', '/console/vendor/', '/consoles/', '/uploads'])(
    'leaves %s to the next route (only the file table is served)',
    async (url) => {
      const res = await fetch(`${base}${url}`);
      expect(res.status).toBe(404);
      expect(await res.text()).toBe('not mine');
    },
  );

  it('refuses other methods with 405', async () => {
    const res = await fetch(`${base}/console/app.js`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toContain('GET');
  });

  it('table points at files that exist', async () => {
    for (const file of consoleFiles(ROOT).values()) await expect(readFile(file)).resolves.toBeInstanceOf(Buffer);
  });
});

describe('console export (static files behind the ingress)', () => {
  it('writes every served file byte for byte, and an nginx block sending the same headers', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'pv-console-'));
    try {
      const written = await exportConsole(ROOT, out);
      for (const [rel, source] of consoleFiles(ROOT)) {
        if (rel === '') continue;
        expect(written).toContain(`console/${rel}`);
        expect((await readFile(path.join(out, 'console', rel))).equals(await readFile(source))).toBe(true);
      }
      const conf = await readFile(path.join(out, 'nginx.conf'), 'utf8');
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect(conf).toContain(`add_header ${name} "${value}" always;`);
      expect(conf).toContain('text/javascript js;');
      // Its own access log: the path only — no query string, no client address (the image's default has both).
      expect(conf).toContain('access_log /dev/stdout pulsevault_console;');
      const format = /log_format pulsevault_console (.*);/.exec(conf)![1]!;
      expect(format).not.toMatch(/\$(request|request_uri|args|query_string|remote_addr|http_x_forwarded_for|proxy_add_x_forwarded_for)\b/);
      // Real nginx accepts the block where the image includes it (conf.d/*.conf inside http {}).
      const main = path.join(out, 'main.conf');
      await writeFile(main, `pid ${out}/nginx.pid; error_log stderr crit; events {} http { client_body_temp_path ${out}/cb; proxy_temp_path ${out}/px; fastcgi_temp_path ${out}/fc; uwsgi_temp_path ${out}/uw; scgi_temp_path ${out}/sc; include ${path.join(out, 'nginx.conf')}; }`);
      // stdout/stderr are files here, as in the container (nginx cannot open /dev/stdout when it is a pipe).
      const output = openSync(path.join(out, 'nginx-t.txt'), 'w');
      const check = spawnSync(existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx', ['-t', '-q', '-p', out, '-e', 'stderr', '-c', main], { stdio: ['ignore', output, output] });
      closeSync(output);
      expect(check.status, await readFile(path.join(out, 'nginx-t.txt'), 'utf8')).toBe(0);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});

describe('dev token of the local stack', () => {
  const env = (extra: Record<string, string>) => loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, SECRETS_DIR: '/nonexistent', ...extra });

  it('is made only in development without any auth configured', () => {
    expect(wantsDevAuth(env({ NODE_ENV: 'development' }))).toBe(true);
    expect(wantsDevAuth(env({ NODE_ENV: 'production' }))).toBe(false);
    expect(wantsDevAuth(env({ NODE_ENV: 'test' }))).toBe(false);
    expect(wantsDevAuth(env({ NODE_ENV: 'development', AUTH_JWT_SECRET: 'x'.repeat(32) }))).toBe(false);
    expect(wantsDevAuth(env({ NODE_ENV: 'development', AUTH_JWKS_URL: 'https://idp.example/jwks' }))).toBe(false);
  });

  it('is an HS256 JWT with all roles, expiring in 12 h, verifiable with the secret handed to the functions', async () => {
    const config = env({ NODE_ENV: 'development', AUTH_ISSUER: 'https://idp.example', AUTH_AUDIENCE: 'pulsevault', AUTH_ROLES_CLAIM: 'pv_roles' });
    const auth = await createDevAuth(config, randomBytes(32).toString('base64url'));
    expect(Buffer.from(auth.secret, 'base64url').length).toBe(32);
    const { payload, protectedHeader } = await jwtVerify(auth.token, new TextEncoder().encode(auth.secret), {
      algorithms: ['HS256'],
      issuer: 'https://idp.example',
      audience: 'pulsevault',
      requiredClaims: ['exp', 'sub'],
    });
    expect(protectedHeader.alg).toBe('HS256');
    expect(payload.pv_roles).toEqual([...DEV_ROLES]);
    const hours = (payload.exp! - payload.iat!) / 3600;
    expect(hours).toBeCloseTo(12, 1);
    const other = await createDevAuth(config, randomBytes(32).toString('base64url'));
    expect(other.secret).not.toBe(auth.secret);
    await expect(jwtVerify(auth.token, new TextEncoder().encode(other.secret), { algorithms: ['HS256'] })).rejects.toThrow();
  });
});
