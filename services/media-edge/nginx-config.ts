/**
 * The media edge's nginx configuration, generated from the one routing table
 * (services/gateway/routes.ts) for both places it runs: `npm start` (nginx is
 * the front door on PORT; every non-media path goes on to the local gateway)
 * and Kubernetes (k8s/media-edge/nginx.conf, which test/k8s.test.ts holds equal
 * to this output; the ingress sends only media paths there).
 *
 * Media files under a grant come first (EDGE_FILE_PATTERN): nginx asks the
 * stream function for a grant of the file's unit (auth_request), caches the
 * answer for the token's remaining life and sends the file itself; whatever it
 * does not send (a refusal, a missing file, an unsatisfiable range, a symlink)
 * goes to the function as a whole request. Then the routes, as regex locations
 * in table order: nginx tries regex locations in the order they appear and the
 * first match wins, as matchPublicRoute does. Stream routes go to the stream
 * function with the edge header (shared/delivery/edge.ts); a granted file comes
 * back as X-Accel-Redirect to the internal location, which nginx serves itself, and
 * an encrypted one (with the decryption module loaded) to the module's location.
 *
 * Nothing logged carries a token: the access log has the path without its query
 * string and no client address, and the error log (whose lines quote the whole
 * request line, token included) keeps only `crit` and worse. The grant cache's
 * files hold their keys (token, unit, Origin) in a temp directory of a process
 * that can read every media file anyway; each lives no longer than its token.
 */
import { PUBLIC_ROUTES } from '../gateway/routes.js';
import {
  EDGE_DECRYPTS_HEADER,
  EDGE_FILE_HEADER,
  EDGE_FILE_PATTERN,
  EDGE_GRANT_LOCATION,
  EDGE_GRANT_VALUE,
  EDGE_INTERNAL_PREFIX,
  EDGE_KEY_HEADER,
  EDGE_ONLY_HEADERS,
  EDGE_REPEATED_HEADERS,
  EDGE_REQUEST_HEADER,
  EDGE_REQUEST_VALUE,
  EDGE_SENT_TYPES,
  EDGE_TOKEN_HEADER,
  type EdgeSend,
} from '../../shared/delivery/edge.js';
import { EDGE_DECRYPT_GRANT_HEADER, EDGE_DECRYPT_PREFIX } from '../../shared/delivery/edge-decrypt.js';
import { IMAGE_EXTENSIONS, IMAGES_SEALED_MARK, IMAGES_SEALING_MARK } from '../../shared/crypto/images.js';
import { ORIGINAL_ENCRYPTED_MARK } from '../../shared/crypto/original-response.js';
import { DELETED_MARK } from '../../shared/lifecycle/tombstone.js';

export interface MediaEdgeOptions {
  /** Argument of `listen`: `127.0.0.1:3000` locally, `8080` in the pod. */
  listen: string;
  /** VIDEO_DIR as nginx sees it, without symlinks in it (the internal location refuses symlinks). */
  videoDir: string;
  /** The stream function's replicas, `host:port`. */
  stream: readonly string[];
  /** Where every other path goes (the local gateway, `host:port`); null: they get 404. */
  otherwise: string | null;
  /** A writable directory for the pid file and nginx's temp files. */
  tempDir: string;
  /** `user` directive: only when nginx starts as root (workers would otherwise drop to nobody). */
  user: string | null;
  /** Where the access log goes (`/dev/stdout` in the pod). */
  accessLog: string;
  /** The file that defines $pv_edge_key (edgeKeyInclude): written by the local stack, by an init container in the pod. */
  edgeKeyFile: string;
  /**
   * The decryption module (./decrypt-module/, load_module): nginx then sends ranges of encrypted
   * originals and sealed images itself. null: the stream function decrypts and sends them.
   */
  decryptModule: string | null;
}

/**
 * The include file that gives nginx the edge's key (MEDIA_EDGE_KEY, whose charset needs no quoting).
 * k8s/media-edge.yaml's init container writes the same line from the secret media-edge-key.
 */
export function edgeKeyInclude(key: string): string {
  if (!/^[A-Za-z0-9+/=._-]{32,}$/.test(key)) throw new Error('MEDIA_EDGE_KEY must be at least 32 of A-Z a-z 0-9 + / = . _ -');
  return `map $host $pv_edge_key { default "${key}"; }\n`;
}

/**
 * Temp paths under a writable directory and the sending tuning: the edge and the
 * benchmark's reference nginx (scripts/bench/nginx.ts) share them, so the two compare fairly.
 */
export function nginxHttpBasics(tempDir: string): string {
  const temp = (name: string) => `${tempDir}/${name}`;
  return `  client_body_temp_path ${temp('client_body')};
  proxy_temp_path ${temp('proxy')};
  fastcgi_temp_path ${temp('fastcgi')};
  uwsgi_temp_path ${temp('uwsgi')};
  scgi_temp_path ${temp('scgi')};
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;`;
}

/**
 * A location's proxy_set_header replaces every inherited one: both levels list these. The edge-only
 * headers a client sent are never handed on (an empty value drops the header); the stream locations set their own.
 */
const proxyHeaders = (own: Partial<Record<(typeof EDGE_ONLY_HEADERS)[number], string>> = {}) =>
  [
    'proxy_set_header Connection "";',
    'proxy_set_header Host $http_host;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    ...EDGE_ONLY_HEADERS.map((h) => `proxy_set_header ${h} ${own[h] ?? '""'};`),
  ].join(' ');
const WHY_HEADER = '# The function decided; nginx keeps only a few of its headers across X-Accel-Redirect.';

/** nginx variable of an upstream response header: `Referrer-Policy` → `$upstream_http_referrer_policy`. */
const upstreamVariable = (header: string) => `$upstream_http_${header.toLowerCase().replaceAll('-', '_')}`;

/**
 * No symlink below the video directory is followed (each component is opened with O_NOFOLLOW); the
 * directory's own path, the operator's mount, is opened at once: without from= a file of
 * /mnt/media/videos/<id>/hls/ costs three more openat/close pairs, and the marks' checks as many again.
 */
const noSymlinks = (videoDir: string) => `disable_symlinks on from=${videoDir};`;

/** Where nginx sends a file the function granted and planned (shared/delivery/edge.ts). */
function internalLocation(send: EdgeSend, videoDir: string): string {
  return `    location ${EDGE_INTERNAL_PREFIX}${send}/ {
      internal;
      alias ${videoDir}/;
      # The function redirects to the real path it checked; a symlink swapped in since is refused.
      ${noSymlinks(videoDir)}
      # The function's validators, not nginx's (add_header ETag also feeds nginx's If-Range check); it answered 304 itself.
      etag off;
      if_modified_since off;
      ${send === 'range' ? '# A single satisfiable range, as the function planned.\n      max_ranges 1;' : '# The function planned the whole file: a Range header it ignored is ignored here too.\n      max_ranges 0;'}
      ${WHY_HEADER}
${EDGE_REPEATED_HEADERS.map((h) => `      add_header ${h} ${upstreamVariable(h)} always;`).join('\n')}
    }`;
}

/** Media requests have no body (the function answers 405 to other methods). */
const NO_BODY = 'proxy_pass_request_body off;\n      proxy_set_header Content-Length "";';
/**
 * A media request the stream function decides by itself (X-Accel-Redirect for a granted file, else
 * its answer). `decrypts`: it may hand an encrypted file back to this edge to decrypt.
 */
const streamDecides = (decrypts: boolean) => `proxy_pass http://pulsevault_stream;
      ${proxyHeaders({ [EDGE_REQUEST_HEADER]: EDGE_REQUEST_VALUE, [EDGE_KEY_HEADER]: '$pv_edge_key', ...(decrypts ? { [EDGE_DECRYPTS_HEADER]: '1' } : {}) })}
      ${NO_BODY}
      # Never spool an answer to the edge's disk: a decrypted original would sit there in the clear.
      proxy_max_temp_file_size 0;`;

/**
 * Where nginx decrypts and sends an encrypted file the function planned (shared/delivery/edge-decrypt.ts):
 * its grant names the status, the range and the file's key, sealed under the edge's key.
 */
function decryptLocation(videoDir: string): string {
  return `    location ${EDGE_DECRYPT_PREFIX} {
      internal;
      alias ${videoDir}/;
      ${noSymlinks(videoDir)}
      pulsevault_decrypt ${upstreamVariable(EDGE_DECRYPT_GRANT_HEADER)} $pv_edge_key;
      etag off;
      if_modified_since off;
      ${WHY_HEADER}
${EDGE_REPEATED_HEADERS.map((h) => `      add_header ${h} ${upstreamVariable(h)} always;`).join('\n')}
      # A file gone since the function opened it (a delete), a chunk that fails its tag before the first
      # byte (after it, the connection is cut), a grant that does not open, a file the edge cannot read
      # (logged): JSON, as the function answers.
      error_page 404 = @pulsevault_decrypt_gone;
      error_page 500 = @pulsevault_decrypt_integrity;
      error_page 502 = @pulsevault_decrypt_grant;
      error_page 503 = @pulsevault_decrypt_unreadable;
    }

${jsonErrorLocation('@pulsevault_decrypt_gone', 404, 'not_found', 'no such media file')}
${jsonErrorLocation('@pulsevault_decrypt_integrity', 500, 'media_integrity', 'the encrypted file failed its integrity check')}
${jsonErrorLocation('@pulsevault_decrypt_grant', 502, 'bad_gateway', 'the media edge could not open the grant of the stream function')}
${jsonErrorLocation('@pulsevault_decrypt_unreadable', 503, 'media_unavailable', 'the media edge cannot read this file')}`;
}

/** The function's headers a grant carries, which nginx repeats on every file it sends under it. */
const GRANT_HEADERS = ['Cache-Control', ...EDGE_REPEATED_HEADERS.filter((h) => h !== 'ETag')] as const;
const grantVariable = (header: string) => `$pv_grant_${header.toLowerCase().replaceAll('-', '_')}`;
/** Status codes of nginx's own that the function answers instead (as JSON errors, or via X-Accel-Redirect). */
const DECIDED_BY_FUNCTION = '301 401 403 404 405 500 502 503 504';
/**
 * An answer of nginx's own in our JSON error shape (shared/platform/errors.ts), as sendJson writes it.
 * A range past the end is found by nginx's range filter, after the grant's headers are set and too
 * late to hand the request on: it answers as the function would.
 */
function jsonErrorLocation(name: string, status: number, error: string, message: string, noStore = true): string {
  return `    location ${name} {${name.startsWith('@') ? '' : '\n      internal;'}
      # No types: nginx would take the requested file's extension (its built-in jpg) over default_type.
      types { }
      default_type "application/json; charset=utf-8";${noStore ? '\n      add_header Cache-Control no-store always;' : ''}
      return ${status} '${JSON.stringify({ error, message, requestId: '$request_id' })}';
    }`;
}

/**
 * What nginx refuses before any function sees the request (a malformed request line or header, a
 * URL or header too long, TRACE, an internal location asked for from outside): our JSON, not its HTML.
 */
const EDGE_REFUSALS: readonly { codes: string; status: number; error: string; message: string }[] = [
  // 494: request header too large (nginx answers it as 400).
  { codes: '400 494', status: 400, error: 'bad_request', message: 'malformed request' },
  { codes: '404', status: 404, error: 'not_found', message: 'no such route' },
  { codes: '405', status: 405, error: 'method_not_allowed', message: 'method not allowed' },
  { codes: '414', status: 414, error: 'uri_too_long', message: 'request URL too long' },
];
/** A URI, not a named location: nginx cannot redirect a request whose request line it could not read to a named one. */
const refusalUri = (status: number) => `/_pulsevault_refused/${status}`;

/** Files nginx sends under a cached grant, and the grant request itself. */
function grantLocations(videoDir: string, decrypts: boolean): string {
  return `
    # A media file: sent by nginx under the function's grant of its unit, cached for the token's life.
    location ~ "${EDGE_FILE_PATTERN}" {
      # Read by the grant subrequest, which shares these variables.
      set $pv_token $arg_token;
      set $pv_args $args;
      # nginx answers a malformed Range with 416; the function ignores it (RFC 9110 §14.2): its call.
      if ($pv_range_malformed) { return 418; }
      # Sent under a grant only what the function reads exactly as nginx does; the rest it decides
      # (and audits) itself: another method (its 405, never a grant), a token parameter nginx would
      # take for another (\$arg_token ignores case and takes the first of two), a path nginx
      # normalised (%2f, //) that the function refuses as written.
      if ($request_method !~ ^(GET|HEAD)$) { return 418; }
      if ($pv_token_ambiguous) { return 418; }
      if ($pv_path_not_plain) { return 418; }
      # A deleted video (shared/lifecycle/tombstone.ts): no grant, cached or not, sends a byte; the function answers 410.
      if (-f ${videoDir}/$pv_video/${DELETED_MARK}) { return 418; }
      # An encrypted original (a grant cached while it was plaintext never sends its ciphertext), or an image of
      # a directory whose images are sealed (an encrypted video's poster and sprites): the function decrypts it.
      if (-f $pv_encrypted_mark) { return 418; }
      # Or of one whose images are being sealed in place (pulsevault encrypt): the function tells them apart.
      if (-f $pv_image_sealing_mark) { return 418; }
      error_page 418 = @pulsevault_stream;${decrypts ? "\n      # The function may hand such a request back to the decryption module, whose failures have error pages too.\n      recursive_error_pages on;" : ''}
      auth_request ${EDGE_GRANT_LOCATION};
${GRANT_HEADERS.map((h) => `      auth_request_set ${grantVariable(h)} ${upstreamVariable(h)};`).join('\n')}
${GRANT_HEADERS.map((h) => `      add_header ${h} ${grantVariable(h)} always;`).join('\n')}
      alias ${videoDir}/$pv_video/$pv_dirs$pv_file;
      ${noSymlinks(videoDir)}
      # RFC 9110 §13.1.3, as the function: not modified since a date at or after the file's (nginx's default is an exact match).
      if_modified_since before;
      # One range or the whole file, as the function plans it.
      max_ranges 1;
      types {
${Object.entries(EDGE_SENT_TYPES).map(([ext, type]) => `        "${type}" ${ext};`).join('\n')}
      }
      error_page ${DECIDED_BY_FUNCTION} = @pulsevault_stream;
      error_page 416 = @pulsevault_unsatisfiable;
    }

${jsonErrorLocation('@pulsevault_unsatisfiable', 416, 'range_not_satisfiable', 'requested range not satisfiable', false)}

    location = ${EDGE_GRANT_LOCATION} {
      internal;
      proxy_pass http://pulsevault_stream/media/videos/$pv_video/$pv_grant_unit?$pv_args;
      ${proxyHeaders({ [EDGE_REQUEST_HEADER]: EDGE_GRANT_VALUE, [EDGE_TOKEN_HEADER]: '$pv_token', [EDGE_FILE_HEADER]: '$pv_dirs$pv_file', [EDGE_KEY_HEADER]: '$pv_edge_key' })}
      ${NO_BODY}
      proxy_buffering on;
      proxy_cache pulsevault_grants;
      proxy_cache_key "$pv_token $pv_video/$pv_grant_unit $http_origin";
      # No proxy_cache_lock: its waiters poll every 500 ms, and a grant for one request (a token for one
      # file) is never cached, so they would queue. A player's first concurrent requests each ask (and are audited).
      # X-Accel-Expires alone says how long (the token's remaining life); refusals are never kept.
      proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
    }

    # What nginx does not send under a grant is decided by the function, request by request.
    location @pulsevault_stream {
      ${streamDecides(decrypts)}
      # Mostly the bytes the function decrypts (originals, sealed images): read from it in large buffers
      # (in memory only, above), not relayed a page at a time. Edge CPU per byte of 4 MiB ranges ~0.6–0.7
      # → ~0.4 ns with the default of one page unbuffered. Up to 4 MiB per response being relayed.
      proxy_buffering on;
      proxy_buffer_size 64k;
      proxy_buffers 16 256k;
    }
`;
}

export function mediaEdgeConfig(o: MediaEdgeOptions): string {
  const temp = (name: string) => `${o.tempDir}/${name}`;
  const decrypts = o.decryptModule !== null;
  const streamLocation = (pattern: string) => `
    location ~ "${pattern}" {
      ${streamDecides(decrypts)}
    }`;
  const otherLocation = (pattern: string) => `
    location ~ "${pattern}" { ${o.otherwise ? 'proxy_pass http://pulsevault_gateway;' : 'return 404;'} }`;
  const routeLocations = PUBLIC_ROUTES.map((r) => (r.function === 'stream' ? streamLocation(r.pattern) : otherLocation(r.pattern))).join('');
  return `# Generated by services/media-edge/nginx-config.ts from the routing table (services/gateway/routes.ts).
${o.decryptModule ? `load_module ${o.decryptModule};\n` : ''}${o.user ? `user ${o.user};\n` : ''}daemon off;
worker_processes auto;
pid ${temp('nginx.pid')};
# Error lines quote the request line, token included: only failures of nginx itself are logged.
error_log stderr crit;
events { worker_connections 4096; }
http {
  server_tokens off;
  log_format pulsevault_edge escape=json '{"time":"$time_iso8601","method":"$request_method","path":"$edge_logged_path","status":$status,"bytes":$body_bytes_sent,"seconds":$request_time}';
  # The public path without its query string (the token): never $request or $request_uri.
  map $request_uri $edge_logged_path { "~^(?<path>[^?]*)" $path; }
  access_log ${o.accessLog} pulsevault_edge;
${nginxHttpBasics(o.tempDir)}
  default_type application/octet-stream;

  # Grants of the stream function (shared/delivery/edge.ts), keyed by token, unit and Origin. Under the pod's
  # 64 MiB /tmp; an evicted grant is asked for (and audited) again.
  proxy_cache_path ${temp('grants')} levels=1:2 keys_zone=pulsevault_grants:8m max_size=32m inactive=10m use_temp_path=off;
  # $pv_edge_key: the secret the stream function believes edge headers with (shared/delivery/edge.ts).
  include ${o.edgeKeyFile};
  map $pv_dirs $pv_grant_unit { "" $pv_file; default $pv_dirs; }
  # For an original, the mark finalize and \`pulsevault encrypt\` leave beside it (shared/crypto/original-response.ts);
  # for an image, those of a directory whose images are sealed or being sealed (shared/crypto/images.ts).
  # "" where a check does not apply: \`-f ""\` is one openat of ".", not a walk of the video's directories.
  map $pv_dirs$pv_file $pv_encrypted_mark {
    "~^original\\.[a-z0-9]+$" ${o.videoDir}/$pv_video/${ORIGINAL_ENCRYPTED_MARK};
    "~\\.(?:${IMAGE_EXTENSIONS.join('|')})$" ${o.videoDir}/$pv_video/$pv_dirs${IMAGES_SEALED_MARK};
    default "";
  }
  map $pv_file $pv_image_sealing_mark { "~\\.(?:${IMAGE_EXTENSIONS.join('|')})$" ${o.videoDir}/$pv_video/$pv_dirs${IMAGES_SEALING_MARK}; default ""; }
  map $args $pv_token_ambiguous { "~*(^|&)token=.*&token=" 1; "~(^|&)(?!token=)(?i:token)=" 1; default 0; }
  map $request_uri $pv_path_not_plain { "~^[^?]*(%|//)" 1; default 0; }
  # Positions of up to 15 digits (beyond 2^53 the function calls a range malformed, as any other it cannot read).
  map $http_range $pv_range_malformed { "" 0; "~^bytes=(\\d{1,15}-\\d{0,15}|-\\d{1,15})(,\\s*(\\d{1,15}-\\d{0,15}|-\\d{1,15}))*$" 0; default 1; }

  upstream pulsevault_stream {
${o.stream.map((s) => `    server ${s};`).join('\n')}
    keepalive 64;
  }
${o.otherwise ? `  upstream pulsevault_gateway {\n    server ${o.otherwise};\n    keepalive 64;\n  }\n` : ''}
  proxy_http_version 1.1;
  ${proxyHeaders()}
  # JSON errors, playlists and uploads pass through as the functions wrote them.
  proxy_intercept_errors off;
  # The function's grant for the decryption module (shared/delivery/edge-decrypt.ts) never reaches a client.
  proxy_hide_header ${EDGE_DECRYPT_GRANT_HEADER};
  proxy_buffering off;
  proxy_request_buffering off;
  client_max_body_size 0;
  proxy_read_timeout 3660s;
  proxy_send_timeout 3660s;

  server {
    listen ${o.listen};
${grantLocations(o.videoDir, decrypts)}${routeLocations}

${EDGE_REFUSALS.map((r) => `    error_page ${r.codes} ${refusalUri(r.status)};`).join('\n')}
${EDGE_REFUSALS.map((r) => jsonErrorLocation(`= ${refusalUri(r.status)}`, r.status, r.error, r.message, true)).join('\n')}

${internalLocation('range', o.videoDir)}
${internalLocation('whole', o.videoDir)}
${decrypts ? `\n${decryptLocation(o.videoDir)}\n` : ''}
    location / { ${o.otherwise ? 'proxy_pass http://pulsevault_gateway;' : 'return 404;'} }
  }
}
`;
}

/**
 * The pod's configuration (k8s/media-edge/nginx.conf, mounted from a ConfigMap):
 * nginx-unprivileged as uid 101 on 8080, the media PVC read-only at MEDIA_ROOT,
 * /tmp an emptyDir (read-only root file system), the stream function's Service.
 * Regenerate with `node dist/services/media-edge/print-k8s-config.js > k8s/media-edge/nginx.conf`.
 */
export const K8S_MEDIA_EDGE: MediaEdgeOptions = {
  listen: '8080',
  videoDir: '/mnt/media/videos',
  stream: ['stream.openfaas-fn.svc.cluster.local:8080'],
  otherwise: null,
  tempDir: '/tmp',
  user: null,
  accessLog: '/dev/stdout',
  edgeKeyFile: '/tmp/edge-key.conf',
  // Built into the edge's image for its nginx (services/media-edge/Dockerfile).
  decryptModule: '/usr/lib/nginx/modules/ngx_http_pulsevault_decrypt_module.so',
};
