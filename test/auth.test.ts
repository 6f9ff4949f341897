import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuthenticator, mayManageVideo, requireRole, type Authenticator } from '../shared/auth/jwt.js';
import { ConfigError, loadConfig } from '../shared/platform/config.js';
import { AppError } from '../shared/platform/errors.js';
import type { Logger } from '../shared/platform/log.js';
import { startFunctionProcess, type FunctionProcess } from './helpers/function-process.js';
import { makeInternalCa, startHttpsJwks, type HttpsJwks, type InternalCa } from './helpers/internal-ca.js';
import { startRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

const HS_SECRET = 'auth-test-secret-0123456789abcdef0123456789';
const noSecrets = mkdtempSync(path.join(tmpdir(), 'pv-auth-nosecrets-'));
const config = (env: Record<string, string>) => loadConfig({ HMAC_SECRET: 'h'.repeat(32), ...env }, { secretsDir: noSecrets });
const quietLog = () => ({ warn: vi.fn(), info: vi.fn(), debug: vi.fn(), error: vi.fn() }) as unknown as Logger & { warn: ReturnType<typeof vi.fn> };
const request = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
const bearer = (jwt: string) => request({ authorization: `Bearer ${jwt}` });
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function status(auth: Authenticator, req: IncomingMessage): Promise<number | 'ok'> {
  try {
    await auth.authenticate(req);
    return 'ok';
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    if (err.status === 401) expect(err.headers['WWW-Authenticate']).toMatch(/^Bearer realm="pulsevault"/);
    return err.status;
  }
}

function hs256(claims: Record<string, unknown>, secret = HS_SECRET) {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
}

describe('JWT authentication (HS256 secret)', () => {
  const auth = createAuthenticator(config({ AUTH_JWT_SECRET: HS_SECRET, AUTH_ISSUER: 'https://idp.test', AUTH_AUDIENCE: 'pulsevault' }), quietLog());
  const good = { sub: 'user-1', iss: 'https://idp.test', aud: 'pulsevault', roles: ['uploader', 'bogus'] };
  const now = () => Math.floor(Date.now() / 1000);

  it('accepts a valid token and keeps only known roles', async () => {
    const p = await auth.authenticate(bearer(await hs256({ ...good, exp: now() + 60 })));
    expect(p).toEqual({ userId: 'user-1', roles: ['uploader'], authenticated: true });
  });

  it.each([
    ['no header', async () => request({})],
    ['not Bearer', async () => request({ authorization: 'Basic dXNlcjpwdw==' })],
    ['expired', async () => bearer(await hs256({ ...good, exp: now() - 3600 }))],
    ['no exp', async () => bearer(await hs256(good))],
    ['no sub', async () => bearer(await hs256({ ...good, sub: undefined, exp: now() + 60 }))],
    ['wrong issuer', async () => bearer(await hs256({ ...good, iss: 'https://evil.test', exp: now() + 60 }))],
    ['wrong audience', async () => bearer(await hs256({ ...good, aud: 'other', exp: now() + 60 }))],
    ['wrong secret', async () => bearer(await hs256({ ...good, exp: now() + 60 }, 'x'.repeat(40)))],
    ['alg none', async () => bearer(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...good, exp: now() + 60 })}.`)],
    ['garbage', async () => bearer('abc.def.ghi')],
  ])('refuses %s with 401', async (_name, make) => {
    expect(await status(auth, await make())).toBe(401);
  });
});

describe('JWT authentication (remote JWKS)', () => {
  let server: Server;
  let jwksUrl: string;
  let fetches = 0;
  let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
  let auth: Authenticator;
  const now = () => Math.floor(Date.now() / 1000);
  const rs256 = (claims: Record<string, unknown>, kid = 'k1', key = rsa.privateKey) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(key);

  beforeAll(async () => {
    rsa = await generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await exportJWK(rsa.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    server = createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    auth = createAuthenticator(config({ AUTH_JWKS_URL: jwksUrl, AUTH_ROLES_CLAIM: 'realm_access.roles' }), quietLog());
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('verifies RS256 tokens with cached keys and reads a nested roles claim', async () => {
    for (let i = 0; i < 3; i++) {
      const p = await auth.authenticate(bearer(await rs256({ sub: 'admin-1', exp: now() + 60, realm_access: { roles: ['admin'] } })));
      expect(p).toEqual({ userId: 'admin-1', roles: ['admin'], authenticated: true });
    }
    expect(fetches).toBe(1);
  });

  it('refuses HS256 signed with the RSA public key (algorithm confusion), unknown kids and other keys', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    expect(await status(auth, bearer(await hs256({ sub: 'x', exp: now() + 60 }, pem)))).toBe(401);
    expect(await status(auth, bearer(await rs256({ sub: 'x', exp: now() + 60 }, 'unknown-kid')))).toBe(401);
    const other = await generateKeyPair('RS256');
    expect(await status(auth, bearer(await rs256({ sub: 'x', exp: now() + 60 }, 'k1', other.privateKey)))).toBe(401);
    expect(await status(auth, bearer(`${b64({ alg: 'none' })}.${b64({ sub: 'x', exp: now() + 60 })}.`))).toBe(401);
  });

  it('answers 503 when the key server cannot be reached', async () => {
    const down = createAuthenticator(config({ AUTH_JWKS_URL: 'http://127.0.0.1:9/jwks.json' }), quietLog());
    expect(await status(down, bearer(await rs256({ sub: 'x', exp: now() + 60 })))).toBe(503);
  });
});

describe('an identity provider behind an internal CA (HTTPS JWKS on loopback, CA made by this test)', () => {
  let ca: InternalCa;
  let idp: HttpsJwks;
  const now = () => Math.floor(Date.now() / 1000);
  const token = () => new SignJWT({ sub: 'u1', exp: now() + 60, roles: ['admin'] }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(idp.privateKey);

  beforeAll(async () => {
    ca = makeInternalCa();
    idp = await startHttpsJwks(ca);
  });
  afterAll(async () => {
    await idp?.close();
    ca?.remove();
  });

  /** 503 auth_unavailable, and the one warning's fields. */
  async function unavailable(jwksUrl: string): Promise<Record<string, unknown>> {
    const log = quietLog();
    const auth = createAuthenticator(config({ AUTH_JWKS_URL: jwksUrl }), log);
    const err = await auth.authenticate(bearer(await token())).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect([(err as AppError).status, (err as AppError).code]).toEqual([503, 'auth_unavailable']);
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn.mock.calls[0]![1]).toBe('JWKS unavailable');
    return log.warn.mock.calls[0]![0] as Record<string, unknown>;
  }

  it('untrusted: logs the TLS verdict and the origin only (no path, no query secret)', async () => {
    const fields = await unavailable(`${idp.url}?client_secret=s3cret-value`);
    expect(fields).toEqual({ idp: new URL(idp.url).origin, cause: 'SELF_SIGNED_CERT_IN_CHAIN: self-signed certificate in certificate chain' });
  });

  it('unresolvable and refused: logs ENOTFOUND and ECONNREFUSED', async () => {
    expect((await unavailable('https://idp.invalid/jwks.json')).cause).toBe('getaddrinfo ENOTFOUND idp.invalid');
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    expect((await unavailable(`https://127.0.0.1:${port}/jwks.json`)).cause).toMatch(/^connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
  });

  it('trusted through NODE_EXTRA_CA_CERTS (as k8s/ mounts the CA bundle): a function verifies tokens; without it, 503 with the cause in its log', async () => {
    const redis = await startRedis();
    const media = mkdtempSync(path.join(tmpdir(), 'pv-auth-ca-media-'));
    // finalize needs its KEK in production (encryption at rest, shared/keys).
    const env = { NODE_ENV: 'production', AUTH_JWKS_URL: idp.url, REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redis.port), MEDIA_ROOT: media, MEDIA_KEK: `k1:${Buffer.alloc(32, 7).toString('base64')}` };
    const trusting = await startFunctionProcess('finalize', { ...env, NODE_EXTRA_CA_CERTS: ca.caFile });
    const distrusting = await startFunctionProcess('finalize', env);
    try {
      // A finalize without an uploadId: 400 once the caller is authenticated (401/503 would mean the token failed).
      const finalize = async (fn: FunctionProcess) =>
        fetch(`${fn.url}/uploads/finalize`, { method: 'POST', headers: { authorization: `Bearer ${await token()}`, 'content-type': 'application/json' }, body: '{}' });
      const ok = await finalize(trusting);
      expect(ok.status, await ok.clone().text()).toBe(400);
      const refused = await finalize(distrusting);
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: unknown }).error).toBe('auth_unavailable');
      await waitFor(() => distrusting.output().includes('self-signed certificate in certificate chain'), 10_000, 'the cause in the log');
      expect(distrusting.output()).not.toContain('/jwks.json');
    } finally {
      await Promise.all([trusting.stop(), distrusting.stop()]);
      await redis.close();
      rmSync(media, { recursive: true, force: true });
    }
  });
});

describe('without auth configuration', () => {
  it('refuses to start in production', () => {
    expect(() => createAuthenticator(config({ NODE_ENV: 'production' }), quietLog())).toThrow(ConfigError);
    expect(() => createAuthenticator(config({ NODE_ENV: 'production', AUTH_JWT_SECRET: HS_SECRET }), quietLog())).not.toThrow();
  });

  it('warns once in development and lets every caller in as an all-roles developer', async () => {
    const log = quietLog();
    const a = createAuthenticator(config({ NODE_ENV: 'development' }), log);
    createAuthenticator(config({ NODE_ENV: 'development' }), log);
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(String(log.warn.mock.calls[0]![0])).toMatch(/AUTHENTICATION IS OFF/);
    expect(a.mode).toBe('insecure-dev');
    expect(await a.authenticate(request({ 'x-pulsevault-user': 'dev-1' }))).toEqual({ userId: 'dev-1', roles: ['uploader', 'viewer', 'admin'], authenticated: false });
    expect((await a.authenticate(request({ 'x-pulsevault-user': 'bad user\n' }))).userId).toBeNull();
  });
});

describe('access rules', () => {
  const user = (userId: string, ...roles: ('uploader' | 'viewer' | 'admin')[]) => ({ userId, roles, authenticated: true });

  it('lets owners and admins manage a video, nobody else', () => {
    expect(mayManageVideo(user('u1', 'uploader'), 'u1')).toBe(true);
    expect(mayManageVideo(user('u2', 'uploader', 'viewer'), 'u1')).toBe(false);
    expect(mayManageVideo(user('a', 'admin'), 'u1')).toBe(true);
    expect(mayManageVideo(user('u1'), null)).toBe(false);
  });

  it('requires a role (admins hold every role)', () => {
    expect(() => requireRole(user('u', 'viewer'), 'uploader')).toThrow(expect.objectContaining({ status: 403 }));
    expect(() => requireRole(user('u', 'uploader'), 'uploader')).not.toThrow();
    expect(() => requireRole(user('a', 'admin'), 'uploader')).not.toThrow();
  });
});
