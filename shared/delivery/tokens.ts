/**
 * Signed media tokens: the `?token=` of a `/media/videos/<id>/<path>` URL.
 *
 *   v1.<kid>.<payload>.<mac>
 *
 * - payload: base64url of `<videoId>\n<exp>\n<scope>`. The three fields cannot
 *   run into each other (a UUID, decimal digits, a scope without newlines) and
 *   decoding is checked to re-encode to the same bytes, so one claim set has
 *   exactly one token.
 * - mac: HMAC-SHA256 over `v1.<kid>.<payload>` with a key derived (HKDF) from
 *   HMAC_SECRET for this one purpose; compared in constant time.
 * - kid: a fingerprint of the secret, so HMAC_SECRET can be rotated: tokens made
 *   with HMAC_SECRET_PREVIOUS keep verifying until they expire (≤ 300 s).
 * - scope: a file (`original.mp4`) or a directory ending in `/` (`hls/`), which a
 *   playlist or manifest grants so one URL plays a whole ladder.
 *
 * Chosen over a JWS: smaller URLs, one algorithm and nothing to negotiate, and
 * verification is one HMAC (a few microseconds) on the hot path of every segment.
 */
import { createHash, createHmac, hkdfSync, timingSafeEqual, type KeyObject, createSecretKey } from 'node:crypto';
import type { Config } from '../platform/config.js';
import { isUuid } from '../platform/ids.js';

const VERSION = 'v1';
/** Longer strings are refused before any work is done. */
export const MAX_TOKEN_LENGTH = 512;
const MAC_LENGTH = 32;
const EXP_RE = /^[1-9][0-9]{0,11}$/;
const B64URL_RE = /^[A-Za-z0-9_-]+$/;
/** A scope is a media path (see shared/delivery/media-path.ts), optionally ending in `/`. */
const SCOPE_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*\/?$/;

export interface TokenClaims {
  videoId: string;
  /** Unix seconds. */
  exp: number;
  scope: string;
}

/** Why a token was refused; recorded in the audit entry and the denial metric. */
export const TOKEN_DENIALS = [
  'token_missing',
  'token_oversize',
  'token_malformed',
  'unknown_kid',
  'bad_signature',
  'token_expired',
  'token_lifetime',
  'wrong_video',
  'out_of_scope',
] as const;
export type TokenDenial = (typeof TOKEN_DENIALS)[number];

export class TokenError extends Error {
  constructor(readonly reason: TokenDenial) {
    super(reason);
    this.name = 'TokenError';
  }
}

interface SigningKey {
  kid: string;
  key: KeyObject;
}

function deriveKey(secret: string): SigningKey {
  const key = Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'pulsevault media token v1', 32));
  const kid = createHash('sha256').update('pulsevault media token kid\0').update(secret).digest('base64url').slice(0, 8);
  return { kid, key: createSecretKey(key) };
}

export function scopeCovers(scope: string, path: string): boolean {
  return scope.endsWith('/') ? path.startsWith(scope) : path === scope;
}

export function isScope(scope: string): boolean {
  return scope.length <= 256 && SCOPE_RE.test(scope);
}

export interface TokenCodec {
  /** kid of the current signing key. */
  readonly kid: string;
  sign(claims: TokenClaims): string;
  /** Verify a token for a request of `path` in `videoId`; throws TokenError. */
  verify(token: string | null | undefined, videoId: string, path: string, nowSeconds?: number): TokenClaims;
  /** Verify signature and time only (metadata accepts a token for any path of the video). */
  verifyForVideo(token: string | null | undefined, videoId: string, nowSeconds?: number): TokenClaims;
}

export interface TokenCodecOptions {
  secret: string;
  previousSecret?: string | null;
  /** The longest lifetime a valid token may have left (TOKEN_EXPIRY_SECONDS). */
  maxLifetimeSeconds: number;
  clockSkewSeconds: number;
}

export function tokenOptionsFromConfig(config: Config): TokenCodecOptions {
  return {
    secret: config.hmacSecret,
    previousSecret: config.hmacSecretPrevious,
    maxLifetimeSeconds: config.tokenExpirySeconds,
    clockSkewSeconds: config.tokenClockSkewSeconds,
  };
}

export function createTokenCodec(options: TokenCodecOptions): TokenCodec {
  const current = deriveKey(options.secret);
  const keys = new Map<string, SigningKey>([[current.kid, current]]);
  if (options.previousSecret) {
    const previous = deriveKey(options.previousSecret);
    if (!keys.has(previous.kid)) keys.set(previous.kid, previous);
  }
  const mac = (key: KeyObject, input: string) => createHmac('sha256', key).update(input).digest();
  const now = () => Math.floor(Date.now() / 1000);

  function decode(token: string | null | undefined, nowSeconds: number): TokenClaims {
    if (token === null || token === undefined || token === '') throw new TokenError('token_missing');
    if (token.length > MAX_TOKEN_LENGTH) throw new TokenError('token_oversize');
    const parts = token.split('.');
    if (parts.length !== 4 || parts[0] !== VERSION) throw new TokenError('token_malformed');
    const [, kid, payload, macText] = parts as [string, string, string, string];
    if (!B64URL_RE.test(payload) || !B64URL_RE.test(macText)) throw new TokenError('token_malformed');
    const key = keys.get(kid);
    if (!key) throw new TokenError('unknown_kid');
    const given = Buffer.from(macText, 'base64url');
    if (given.length !== MAC_LENGTH || given.toString('base64url') !== macText) throw new TokenError('token_malformed');
    if (!timingSafeEqual(given, mac(key.key, `${VERSION}.${kid}.${payload}`))) throw new TokenError('bad_signature');

    // Authentic from here on; still parse strictly (a key could have signed a bug).
    const bytes = Buffer.from(payload, 'base64url');
    if (bytes.toString('base64url') !== payload) throw new TokenError('token_malformed');
    const fields = bytes.toString('utf8').split('\n');
    if (fields.length !== 3) throw new TokenError('token_malformed');
    const [videoId, expText, scope] = fields as [string, string, string];
    if (!isUuid(videoId) || !EXP_RE.test(expText) || !isScope(scope)) throw new TokenError('token_malformed');
    const exp = Number(expText);
    if (nowSeconds > exp + options.clockSkewSeconds) throw new TokenError('token_expired');
    // Tokens never outlive TOKEN_EXPIRY_SECONDS, even ones minted before it was lowered.
    if (exp - nowSeconds > options.maxLifetimeSeconds + options.clockSkewSeconds) throw new TokenError('token_lifetime');
    return { videoId, exp, scope };
  }

  return {
    kid: current.kid,
    sign({ videoId, exp, scope }) {
      if (!isUuid(videoId)) throw new TypeError('videoId must be a lowercase UUID');
      if (!Number.isInteger(exp) || !EXP_RE.test(String(exp))) throw new TypeError('exp must be positive unix seconds');
      if (!isScope(scope)) throw new TypeError('invalid scope');
      const payload = Buffer.from(`${videoId}\n${exp}\n${scope}`, 'utf8').toString('base64url');
      const signed = `${VERSION}.${current.kid}.${payload}`;
      return `${signed}.${mac(current.key, signed).toString('base64url')}`;
    },
    verifyForVideo(token, videoId, nowSeconds = now()) {
      const claims = decode(token, nowSeconds);
      if (claims.videoId !== videoId) throw new TokenError('wrong_video');
      return claims;
    },
    verify(token, videoId, path, nowSeconds = now()) {
      const claims = this.verifyForVideo(token, videoId, nowSeconds);
      if (!scopeCovers(claims.scope, path)) throw new TokenError('out_of_scope');
      return claims;
    },
  };
}
