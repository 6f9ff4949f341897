/**
 * Why a call to another service (the identity provider's JWKS, a webhook, the mirror) failed,
 * in words an operator can act on. Node's fetch rejects with `TypeError: fetch failed` and keeps
 * the reason in `cause` (sometimes an AggregateError of one per address): the TLS verdict
 * (`SELF_SIGNED_CERT_IN_CHAIN: self-signed certificate in certificate chain` — an internal CA
 * not in NODE_EXTRA_CA_CERTS), DNS (`ENOTFOUND`), a refused or timed-out connection. None of
 * these messages carries the URL, so its credentials or query never reach a log line.
 */
export function failureCause(err: unknown): string {
  let deepest = err;
  for (let at = err, depth = 0; at instanceof Error && depth < 8; depth++) {
    deepest = at;
    const next: unknown = at instanceof AggregateError && at.errors.length > 0 ? at.errors[0] : at.cause;
    if (!(next instanceof Error)) break;
    at = next;
  }
  if (!(deepest instanceof Error)) return String(deepest);
  const code = (deepest as NodeJS.ErrnoException).code;
  return code && !deepest.message.includes(code) ? `${code}: ${deepest.message}` : deepest.message;
}

/** A URL as it may be logged: scheme, host and port only (no credentials, path or query). */
export function loggableOrigin(url: string): string {
  return URL.canParse(url) ? new URL(url).origin : '(not a URL)';
}
