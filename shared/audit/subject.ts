/**
 * How a user appears in audit entries: a keyed pseudonym of the JWT `sub`, never
 * the subject itself. Identity providers issue subjects such as `josé@example.org`
 * or `CONTOSO\jdoe` — an email or a name is PHI-adjacent, and audit files are kept
 * for years and copied to places meta.json never goes. A plain hash would be
 * reversible by guessing emails; keyed with HMAC_SECRET it is not, yet an operator
 * holding the secret can map a known subject to its pseudonym:
 *
 *   printf 'pulsevault-subject:%s' "$SUB" | openssl dgst -sha256 -hmac "$HMAC_SECRET" | awk '{print "sub-" substr($2, 1, 32)}'
 *
 * The raw subject stays where ownership is decided (meta.json `owner`, the upload's
 * server-side owner, the finalize journal): stores that already hold PHI.
 */
import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';

const PREFIX = 'sub-';

/**
 * The key object of the last secret used (a string key is re-imported on every
 * createHmac) and the pseudonyms computed with it: a viewer's requests come in
 * runs, and under load the HMAC was a tenth of a record() call's CPU.
 */
let key: { secret: string; object: KeyObject; pseudonyms: LRUCache<string, string> } | null = null;

export function subjectPseudonym(hmacSecret: string, subject: string): string {
  if (!hmacSecret) throw new Error('HMAC_SECRET is required to pseudonymise user ids in audit entries');
  if (key?.secret !== hmacSecret) key = { secret: hmacSecret, object: createSecretKey(Buffer.from(hmacSecret, 'utf8')), pseudonyms: new LRUCache({ max: 10_000 }) };
  let pseudonym = key.pseudonyms.get(subject);
  if (pseudonym === undefined) {
    pseudonym = PREFIX + createHmac('sha256', key.object).update(`pulsevault-subject:${subject}`).digest('hex').slice(0, 32);
    key.pseudonyms.set(subject, pseudonym);
  }
  return pseudonym;
}

/**
 * Every pseudonym a subject may appear under: with the current secret and, after a
 * rotation, the previous one (entries written before it carry the old pseudonym).
 */
export function subjectPseudonyms(secrets: { hmacSecret: string; hmacSecretPrevious: string | null }, subject: string): string[] {
  return [secrets.hmacSecret, secrets.hmacSecretPrevious].filter((s): s is string => !!s).map((secret) => subjectPseudonym(secret, subject));
}
