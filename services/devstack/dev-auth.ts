/**
 * Local sign-in for `npm start`: when no auth is configured (no AUTH_JWKS_URL, no
 * AUTH_JWT_SECRET) in development, the stack uses the HS256 secret it keeps
 * under MEDIA_ROOT (services/devstack/local-defaults.ts; made on the first run),
 * hands it to the functions as AUTH_JWT_SECRET, and prints a token signed with
 * it for the web console and curl. A token stays valid across restarts until it
 * expires; deleting MEDIA_ROOT/.dev-jwt-secret revokes every one.
 *
 * Only NODE_ENV=development: production demands real auth, and the tests
 * (NODE_ENV=test) choose their auth explicitly.
 */
import { SignJWT } from 'jose';
import type { Config } from '../../shared/platform/config.js';
import { ROLES } from '../../shared/auth/jwt.js';

/** Every role there is: the developer may do anything locally. */
export const DEV_ROLES = ROLES;
/** A fixed user id, so videos uploaded in earlier runs still belong to the dev user. */
export const DEV_USER_ID = '00000000-0000-4000-8000-000000000001';
const DEV_TOKEN_HOURS = 12;

export interface DevAuth {
  /** For the functions' environment only; never printed or logged. */
  secret: string;
  token: string;
  expiresAt: Date;
}

export function wantsDevAuth(config: Config): boolean {
  return config.nodeEnv === 'development' && !config.auth.jwksUrl && !config.auth.jwtSecret;
}

export async function createDevAuth(config: Config, secret: string): Promise<DevAuth> {
  const expiresAt = new Date(Date.now() + DEV_TOKEN_HOURS * 3600_000);
  const jwt = new SignJWT({ [config.auth.rolesClaim]: [...DEV_ROLES] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(DEV_USER_ID)
    .setIssuedAt()
    .setExpirationTime(Math.floor(expiresAt.getTime() / 1000));
  if (config.auth.issuer) jwt.setIssuer(config.auth.issuer);
  if (config.auth.audience) jwt.setAudience(config.auth.audience);
  return { secret, token: await jwt.sign(new TextEncoder().encode(secret)), expiresAt };
}

/** The start-up banner (stdout, not the JSON log: a token is a credential and log pipelines keep lines). */
export function devAuthBanner(auth: DevAuth, gatewayUrl: string): string {
  return [
    '',
    `Web console: ${gatewayUrl}/console/`,
    `Dev token (HS256, roles ${DEV_ROLES.join(',')}, valid until ${auth.expiresAt.toISOString()}):`,
    `PULSEVAULT_DEV_TOKEN=${auth.token}`,
    '',
  ].join('\n');
}
