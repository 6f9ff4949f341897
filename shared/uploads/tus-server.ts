/**
 * The tus 1.0.0 endpoint (@tus/server + the FileStore in UPLOAD_DIR) as a
 * PulseVault handler: `/uploads` (creation, creation-with-upload,
 * creation-defer-length) and `/uploads/<id>` (HEAD, PATCH, DELETE), with
 * expiration, a Redis lock per upload, and Locations that work through any
 * route (shared/uploads/location.ts).
 *
 * GET is refused: the FileStore could read an upload back, but staged bytes are
 * never served (they are only reachable as a finalized video, through signed URLs).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EVENTS, Server, TUS_RESUMABLE } from '@tus/server';
import { requireRole, type Authenticator } from '../auth/jwt.js';
import { createCors } from '../delivery/cors.js';
import type { Config } from '../platform/config.js';
import { AppError, MethodNotAllowedError, NotFoundError } from '../platform/errors.js';
import type { RequestContext } from '../platform/handler-contract.js';
import { requestPath } from '../platform/http.js';
import type { Logger } from '../platform/log.js';
import { isRedisUnavailable } from '../platform/redis.js';
import { CHECKSUM_ALGORITHMS, parseUploadChecksum, withExpectedChecksum } from './checksum.js';
import { isUploadId, newUploadId } from './ids.js';
import { firstForwarded, uploadLocation } from './location.js';
import { LockUnavailableError, type RedisLocker } from './locker.js';
import { countUpload } from './metrics.js';
import { rememberCreator, withOwner } from './owner.js';
import type { UploadStore } from './store.js';

const COLLECTION_METHODS = ['POST', 'OPTIONS'] as const;
const UPLOAD_METHODS = ['HEAD', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const PATH_RE = /^\/uploads(?:\/([^/]*))?$/;

export interface TusUploadsOptions {
  config: Config;
  /** Upload creation needs the uploader role; PATCH/HEAD/DELETE are authorised by the unguessable upload URL. */
  auth: Authenticator;
  store: UploadStore;
  locker: RedisLocker;
  log: Logger;
}

export type TusHandler = (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<void>;

type NodeRuntime = { runtime?: { node?: { req?: IncomingMessage } } };

/** As finalize's (shared/finalize/finalizer.ts): a full volume is temporary, the bytes stored so far are kept. */
const INSUFFICIENT_STORAGE_MESSAGE = 'the upload volume is full; the bytes stored so far are kept — HEAD for the offset and resume once space is freed';

/** tus answers a stale Upload-Offset in text; it is the refusal two PATCHes racing at one offset get. */
const OFFSET_CONFLICT_MESSAGE = "Upload-Offset is not the upload's offset: HEAD for it and resume from there";

export function createTusHandler({ config, auth, store, locker, log }: TusUploadsOptions): TusHandler {
  // Our JSON answers replace tus's response, CORS headers included (a browser reads no status without them).
  const cors = createCors({ origins: config.corsOrigins, methods: [], allowHeaders: [], exposeHeaders: ['Tus-Resumable'] });
  const server = new Server({
    path: '/uploads',
    datastore: store,
    locker,
    maxSize: config.maxUploadBytes,
    respectForwardedHeaders: config.trustedProxies.length > 0,
    // An empty list means no cross-origin uploads (tus would otherwise answer `*`).
    allowedOrigins: config.corsOrigins,
    // Browser clients of the checksum extension (./checksum.ts) send and read these across origins.
    allowedHeaders: ['Upload-Checksum'],
    exposedHeaders: ['Tus-Checksum-Algorithm'],
    namingFunction: () => newUploadId(),
    generateUrl: (req, { id }) => uploadLocation(config, { headers: req.headers, path: new URL(req.url).pathname }, id),
    getFileIdFromRequest: (_req, lastPath) => (lastPath && isUploadId(lastPath) ? lastPath : undefined),
    // srvx hands hooks a web Request; the Node request behind it says who authenticated.
    onUploadCreate: async (req, upload) => ({ metadata: withOwner((req as NodeRuntime).runtime?.node?.req, upload.metadata) }),
    onResponseError: (req, err) => {
      if ('status_code' in err && err.status_code === 409) {
        const node = (req as NodeRuntime).runtime?.node?.req;
        throw new AppError(409, 'upload_offset_conflict', OFFSET_CONFLICT_MESSAGE, node ? cors.headers(node) : {});
      }
      if ('status_code' in err) return undefined; // a tus protocol answer (404, 413, …)
      if (err instanceof LockUnavailableError) return { status_code: 503, body: `${err.message}\n` };
      if (isRedisUnavailable(err)) return { status_code: 503, body: 'Redis is unavailable; retry later\n' };
      // Thrown, not mapped: it reaches the runtime, which answers our JSON error shape (tus would send text).
      // The offset is the file's size (FileStore): whatever of the chunk reached the disk counts, a HEAD says where to resume.
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new AppError(507, 'insufficient_storage', INSUFFICIENT_STORAGE_MESSAGE);
      // Never echo an unexpected error: it may name paths. The log has it.
      log.error({ err }, 'tus request failed');
      return { status_code: 500, body: 'internal server error\n' };
    },
  });
  server.on(EVENTS.POST_CREATE, () => countUpload('created'));
  server.on(EVENTS.POST_FINISH, () => countUpload('completed'));
  server.on(EVENTS.POST_TERMINATE, () => countUpload('terminated'));

  const handle: TusHandler = async (req, res, ctx) => {
    const match = PATH_RE.exec(requestPath(req));
    if (!match) throw new NotFoundError('no such upload endpoint');
    const id = match[1]; // '' for `/uploads/`: the collection, as many clients configure their endpoint
    applyMethodOverride(req);
    const method = req.method ?? 'GET';
    ctx.route = id ? `${method} /uploads/:id` : `${method} /uploads`;
    const allowed: readonly string[] = id ? UPLOAD_METHODS : COLLECTION_METHODS;
    if (!allowed.includes(method)) throw new MethodNotAllowedError(allowed);
    if (id && !isUploadId(id)) throw new NotFoundError('no such upload');
    refuseWhatTusSpecRefuses(req);
    if (method === 'POST') {
      const principal = await auth.authenticate(req);
      requireRole(principal, 'uploader');
      rememberCreator(req, principal);
    }
    keepFirstForwardedProto(req);
    if (method === 'OPTIONS') res.setHeader('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','));
    const checksum = req.headers['upload-checksum'];
    if (typeof checksum === 'string' && (method === 'PATCH' || method === 'POST')) {
      await withExpectedChecksum(parseUploadChecksum(checksum), () => server.handle(req, res));
    } else {
      await server.handle(req, res);
    }
  };
  return async (req, res, ctx) => {
    try {
      await handle(req, res, ctx);
    } catch (err) {
      // Our own refusals (401, 403, 404, 405, …) are tus responses too: every one carries Tus-Resumable.
      if (err instanceof AppError && !err.headers['Tus-Resumable']) throw new AppError(err.status, err.code, err.message, { ...err.headers, 'Tus-Resumable': TUS_RESUMABLE });
      throw err;
    }
  };
}

/**
 * tus 1.0.0: a POST carrying `X-HTTP-Method-Override` MUST be handled as that method (for clients
 * and proxies that only speak GET/POST; tus-js-client's overridePatchMethod). @tus/server 2 ignores it.
 */
function applyMethodOverride(req: IncomingMessage): void {
  const override = req.headers['x-http-method-override'];
  if (req.method !== 'POST' || typeof override !== 'string') return;
  const method = override.trim().toUpperCase();
  if (method === 'PATCH' || method === 'DELETE') req.method = method;
}

/**
 * Answers of the tus 1.0.0 spec that @tus/server gives differently: an unsupported
 * Tus-Resumable is 412 with Tus-Version; a PATCH whose Content-Type is missing or not
 * `application/offset+octet-stream` is 415, one without Upload-Offset 400. (Tus-Resumable is added
 * to these, as to every refusal of ours, by createTusHandler's wrapper.)
 */
function refuseWhatTusSpecRefuses(req: IncomingMessage): void {
  const version = req.headers['tus-resumable'];
  if (req.method !== 'OPTIONS' && version !== undefined && version !== TUS_RESUMABLE) {
    throw new AppError(412, 'unsupported_tus_version', `Tus-Resumable ${TUS_RESUMABLE} is required`, { 'Tus-Version': TUS_RESUMABLE });
  }
  if (req.method === 'PATCH') {
    if (req.headers['content-type'] !== 'application/offset+octet-stream') {
      throw new AppError(415, 'unsupported_media_type', 'PATCH bodies must be application/offset+octet-stream');
    }
    if (req.headers['upload-offset'] === undefined) {
      throw new AppError(400, 'missing_upload_offset', 'PATCH needs an Upload-Offset header');
    }
  }
}

/**
 * tus validates X-Forwarded-Proto on every request, trusted or not, and answers
 * 400 to a proxy chain's `https, http`. Keep the first hop's value (or none).
 * srvx reads headers from `rawHeaders`, so both views are rewritten.
 */
function keepFirstForwardedProto(req: IncomingMessage): void {
  const raw = req.headers['x-forwarded-proto'];
  if (raw === undefined) return;
  const first = firstForwarded(Array.isArray(raw) ? raw[0] : raw)?.toLowerCase();
  const kept = first === 'http' || first === 'https' ? first : null;
  const rawHeaders: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() !== 'x-forwarded-proto') rawHeaders.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
  }
  if (kept) {
    rawHeaders.push('X-Forwarded-Proto', kept);
    req.headers['x-forwarded-proto'] = kept;
  } else {
    delete req.headers['x-forwarded-proto'];
  }
  req.rawHeaders = rawHeaders;
}
