/**
 * Caller authentication (JWT bearer tokens, verified with jose) and the access
 * rules built on it — the one place the role model (docs/api.md "Roles") is decided:
 *
 *   admin     everything, on every video (holds every role)
 *   uploader  create and finalize uploads; sign URLs for, read private metadata of, and list OWN videos
 *   viewer    no API right: watches what a signed URL an owner or admin shared grants (as anyone holding it)
 *   (none)    as viewer
 *
 * Used by sign, metadata, finalize and upload creation:
 *
 *   const auth = createAuthenticator(config, log);      // in setup(): refuses production without auth
 *   const principal = await auth.authenticate(req);     // per request: 401 when missing/invalid
 *   requireRole(principal, 'uploader');                 // 403 unless uploader or admin
 *   if (!mayManageVideo(principal, meta.owner)) ...     // owner or admin
 *
 * Keys: `AUTH_JWKS_URL` (remote JWKS, RS*, PS*, ES*; cached by jose) and/or
 * `AUTH_JWT_SECRET` (HS256). The algorithm allow-list follows the configured key
 * kinds, so `none` and HS/RS confusion cannot verify. `exp` is required; `iss`
 * and `aud` are checked when configured. Roles come from `AUTH_ROLES_CLAIM`
 * (a dotted path such as `realm_access.roles`; an array or a space-separated string).
 *
 * Without AUTH_JWKS_URL and AUTH_JWT_SECRET, production refuses to start; other
 * environments log one warning and treat every caller as an all-roles developer
 * whose user id is the `X-PulseVault-User` header (or null).
 */
import type { IncomingMessage } from 'node:http';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { ConfigError, type Config } from '../platform/config.js';
import { ForbiddenError, ServiceUnavailableError, UnauthorizedError } from '../platform/errors.js';
import type { Logger } from '../platform/log.js';
import { failureCause, loggableOrigin } from '../platform/outbound.js';

export const ROLES = ['uploader', 'viewer', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  /** The JWT `sub`, any string up to MAX_SUBJECT_LENGTH; in unauthenticated development, the X-PulseVault-User header or null. */
  userId: string | null;
  roles: Role[];
  /** false only in development without auth configuration. */
  authenticated: boolean;
}

export interface Authenticator {
  /** 'jwt' when tokens are verified; 'insecure-dev' when auth is not configured (never in production). */
  readonly mode: 'jwt' | 'insecure-dev';
  authenticate(req: IncomingMessage): Promise<Principal>;
}

const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];
const DEV_USER_HEADER = 'x-pulsevault-user';
const USER_ID_RE = /^[A-Za-z0-9._:@|-]{1,128}$/;
/** Far above what IdPs issue (OIDC: 255 ASCII); bounds what meta.json and listings carry. */
export const MAX_SUBJECT_LENGTH = 1024;
const CHALLENGE = 'Bearer realm="pulsevault"';

let warnedInsecure = false;

export function createAuthenticator(config: Config, log: Logger): Authenticator {
  const { jwksUrl, jwtSecret, issuer, audience, rolesClaim } = config.auth;
  if (!jwksUrl && !jwtSecret) {
    if (config.nodeEnv === 'production') {
      throw new ConfigError('AUTH_JWKS_URL', 'or AUTH_JWT_SECRET is required when NODE_ENV=production');
    }
    if (!warnedInsecure) {
      warnedInsecure = true;
      log.warn(
        '!!! AUTHENTICATION IS OFF: neither AUTH_JWKS_URL nor AUTH_JWT_SECRET is set. Every caller is treated as an admin. ' +
          'Development only; NODE_ENV=production refuses to start like this. !!!',
      );
    }
    return {
      mode: 'insecure-dev',
      async authenticate(req) {
        const header = req.headers[DEV_USER_HEADER];
        const userId = typeof header === 'string' && USER_ID_RE.test(header) ? header : null;
        return { userId, roles: [...ROLES], authenticated: false };
      },
    };
  }

  // Imported once: handed raw bytes, jose would import a WebCrypto key on every verify (2× the cost).
  const secretKey = jwtSecret
    ? crypto.subtle.importKey('raw', new TextEncoder().encode(jwtSecret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
    : null;
  const jwksOrigin = jwksUrl ? loggableOrigin(jwksUrl) : null;
  const jwks = jwksUrl ? createRemoteJWKSet(new URL(jwksUrl), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000, timeoutDuration: 5_000 }) : null;
  const algorithms = [...(secretKey ? ['HS256'] : []), ...(jwks ? ASYMMETRIC_ALGS : [])];
  const getKey: JWTVerifyGetKey = (header, token) => {
    if (header.alg === 'HS256' && secretKey) return secretKey;
    if (jwks) return jwks(header, token);
    throw new joseErrors.JOSEAlgNotAllowed('algorithm not allowed');
  };

  return {
    mode: 'jwt',
    async authenticate(req) {
      const header = req.headers.authorization;
      const match = typeof header === 'string' ? /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(header) : null;
      if (!match) throw new UnauthorizedError('a Bearer token is required', CHALLENGE);
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(match[1]!, getKey, {
          algorithms,
          requiredClaims: ['exp', 'sub'],
          clockTolerance: config.tokenClockSkewSeconds,
          ...(issuer ? { issuer } : {}),
          ...(audience ? { audience } : {}),
        }));
      } catch (err) {
        if (err instanceof joseErrors.JWKSTimeout || !(err instanceof joseErrors.JOSEError)) {
          // The cause says which fix applies: the CA bundle (docs/deploy.md "Internal CA"), DNS, the network.
          log.warn({ idp: jwksOrigin, cause: failureCause(err) }, 'JWKS unavailable');
          throw new ServiceUnavailableError('the identity provider keys are unavailable', 'auth_unavailable');
        }
        throw new UnauthorizedError('the Bearer token is not valid', `${CHALLENGE}, error="invalid_token"`);
      }
      // Any subject an IdP issues (`CONTOSO\jdoe`, `josé@example.org`, 200 characters …) is an owner id as it is;
      // audit entries carry only its keyed pseudonym (shared/audit/subject.ts).
      if (typeof payload.sub !== 'string' || payload.sub === '' || payload.sub.length > MAX_SUBJECT_LENGTH) {
        throw new UnauthorizedError('the Bearer token has no subject', `${CHALLENGE}, error="invalid_token"`);
      }
      return { userId: payload.sub, roles: rolesFrom(payload, rolesClaim), authenticated: true };
    },
  };
}

function rolesFrom(payload: JWTPayload, claim: string): Role[] {
  let value: unknown = payload;
  for (const key of claim.split('.')) value = value && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
  const names = Array.isArray(value) ? value : typeof value === 'string' ? value.split(' ') : [];
  return ROLES.filter((role) => names.includes(role));
}

export function hasRole(principal: { roles: readonly Role[] }, role: Role): boolean {
  return principal.roles.includes(role) || principal.roles.includes('admin');
}

/** 403 unless the caller has one of `roles` (admins have every role). */
export function requireRole(principal: Principal, ...roles: Role[]): void {
  if (!roles.some((role) => hasRole(principal, role))) throw new ForbiddenError('your role does not allow this', 'role_required');
}

/**
 * Sign URLs for, and read the private metadata of, a video: admins any, uploaders their own.
 * Owning a video is not enough: a subject moved to `viewer` (or to no role) keeps no rights over it.
 */
export function mayManageVideo(principal: Principal, owner: string | null): boolean {
  return hasRole(principal, 'admin') || (hasRole(principal, 'uploader') && principal.userId !== null && principal.userId === owner);
}

/** The role recorded in audit entries: the strongest the caller holds. */
export function auditRole(principal: Principal): Role | null {
  return [...ROLES].reverse().find((role) => principal.roles.includes(role)) ?? null;
}
