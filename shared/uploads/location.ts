/**
 * The `Location` of a new upload: a URL that, followed by the client, reaches
 * the same upload whichever way the client came in.
 *
 * The function always sees the public path (`/uploads`): the OpenFaaS gateway
 * strips `/function/tus-upload` and tells nobody. So, in order:
 * 1. `PUBLIC_URL` set → `<PUBLIC_URL>/uploads/<id>` (absolute, the public route).
 * 2. `TRUST_PROXY` names trusted proxies and a valid `X-Forwarded-Host` → `<proto>://<host>/uploads/<id>`,
 *    proto from `X-Forwarded-Proto` (http when absent).
 * 3. Otherwise a relative reference, `uploads/<id>`: RFC 3986 §5.2 resolves it
 *    against the URL the client called, so `…/uploads` gives `…/uploads/<id>`
 *    under any prefix (`/function/tus-upload/uploads` included). A POST to
 *    `…/uploads/` (trailing slash) gets `<id>`.
 */
import type { Config } from '../platform/config.js';

/** host or host:port (names, IPv4, bracketed IPv6); anything else is not trusted. */
const HOST_RE = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** First value of a possibly comma-chained forwarded header (`https, http` behind two proxies). */
export function firstForwarded(value: string | null | undefined): string | null {
  const first = value?.split(',')[0]?.trim();
  return first ? first : null;
}

export function uploadLocation(
  config: Pick<Config, 'publicUrl' | 'trustedProxies'>,
  request: { headers: { get(name: string): string | null }; path: string },
  id: string,
): string {
  if (config.publicUrl) return `${config.publicUrl}/uploads/${id}`;
  if (config.trustedProxies.length > 0) {
    const host = firstForwarded(request.headers.get('x-forwarded-host'));
    const proto = firstForwarded(request.headers.get('x-forwarded-proto'))?.toLowerCase();
    if (host && HOST_RE.test(host)) return `${proto === 'https' ? 'https' : 'http'}://${host}/uploads/${id}`;
  }
  return request.path.endsWith('/') ? id : `uploads/${id}`;
}
