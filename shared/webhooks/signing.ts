/**
 * Standard Webhooks signing (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix
 * seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`), made by the
 * spec's own `standardwebhooks` package so a receiver verifies with it (or any of the spec's
 * libraries) unmodified. During a rotation the endpoint holds two secrets and every delivery
 * carries one signature per secret, space-separated, as the spec allows: a receiver that still
 * has only the old secret, or already only the new one, verifies either way.
 */
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

export const SECRET_PREFIX = 'whsec_';

/** A new endpoint secret: `whsec_` + base64 of 32 random bytes (the spec's form). */
export function newSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64')}`;
}

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

/** The three headers of one delivery of `body`, signed with every secret in `secrets`. */
export function signDelivery(secrets: readonly string[], id: string, at: Date, body: string): SignedHeaders {
  if (secrets.length === 0) throw new Error('an endpoint without a secret cannot be signed for');
  const signature = secrets.map((s) => new Webhook(s).sign(id, at, body)).join(' ');
  return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signature };
}
