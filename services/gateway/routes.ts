/**
 * The public API's routing table: which function answers which public path.
 * One table drives the local gateway (services/gateway) and the Kubernetes
 * ingress (k8s/, checked against this table by test/k8s.test.ts).
 *
 * A function receives the public path unchanged (the OpenFaaS gateway strips only
 * `/function/<name>`), so `/uploads/abc` reaches tus-upload as `/uploads/abc`,
 * exactly as `/function/tus-upload/uploads/abc` does.
 *
 * Patterns are anchored regular expressions in the subset that both JavaScript
 * and ingress-nginx (PCRE) read the same way. First match wins.
 */
export const FUNCTIONS = ['tus-upload', 'finalize', 'sign', 'stream', 'metadata', 'videos', 'transcoder', 'audit-report', 'webhooks'] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

export interface PublicRoute {
  pattern: string;
  methods: readonly string[];
  function: FunctionName;
  /** Request bodies may be large and must stream (no proxy body limit, no buffering). */
  streamingUpload?: boolean;
}

const UUID = '[0-9a-fA-F-]{36}';

export const PUBLIC_ROUTES: readonly PublicRoute[] = [
  { pattern: '^/uploads/finalize$', methods: ['POST', 'OPTIONS'], function: 'finalize' },
  {
    pattern: '^/uploads(/[^/]*)?$', // `/uploads/` too: many tus clients configure the endpoint with a slash
    methods: ['OPTIONS', 'POST', 'HEAD', 'PATCH', 'DELETE', 'GET'],
    function: 'tus-upload',
    streamingUpload: true,
  },
  { pattern: '^/media/sign$', methods: ['POST', 'OPTIONS'], function: 'sign' },
  { pattern: '^/media/videos$', methods: ['GET', 'OPTIONS'], function: 'metadata' },
  { pattern: `^/media/videos/${UUID}/(metadata|renditions)$`, methods: ['GET', 'HEAD', 'OPTIONS'], function: 'metadata' },
  // Before stream, whose pattern covers `/hold` (never a media path: no extension).
  { pattern: `^/media/videos/${UUID}$`, methods: ['PATCH', 'DELETE', 'OPTIONS'], function: 'videos' },
  { pattern: `^/media/videos/${UUID}/hold$`, methods: ['PUT', 'DELETE', 'OPTIONS'], function: 'videos' },
  // POST: the content-key URL of encrypted renditions (`<dir>/clearkey`).
  { pattern: '^/media/videos/[^/]+/.+$', methods: ['GET', 'HEAD', 'POST', 'OPTIONS'], function: 'stream' },
  { pattern: '^/admin/audit/report$', methods: ['GET'], function: 'audit-report' },
  { pattern: `^/admin/webhooks(/${UUID}(/rotate)?)?$`, methods: ['GET', 'POST', 'DELETE'], function: 'webhooks' },
];

const compiled = PUBLIC_ROUTES.map((route) => ({ route, re: new RegExp(route.pattern) }));

export type RouteMatch = { route: PublicRoute; methodAllowed: boolean };

/** The route for a public path, or undefined when no function serves it. */
export function matchPublicRoute(method: string, pathname: string): RouteMatch | undefined {
  for (const { route, re } of compiled) {
    if (re.test(pathname)) return { route, methodAllowed: route.methods.includes(method) };
  }
  return undefined;
}

/** `/function/<name>/rest?q` → `{name, path: '/rest?q'}`, as the OpenFaaS gateway strips it. */
export function parseFunctionPath(url: string): { name: string; path: string } | undefined {
  const m = /^\/function\/([a-z0-9-]+)(\/[^?]*)?(\?.*)?$/.exec(url);
  if (!m) return undefined;
  return { name: m[1]!, path: `${m[2] ?? '/'}${m[3] ?? ''}` };
}
