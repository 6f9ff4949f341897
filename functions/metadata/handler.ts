/**
 * metadata: `GET /media/videos/:videoId/metadata|renditions?token=`, and the
 * admin/owner listing `GET /media/videos?status=&owner=&limit=&cursor=` served
 * from the PostgreSQL mirror when METADATA_DSN is set, from the media volume otherwise.
 *
 * A signed-URL token for any path of the video opens both (a player holding a
 * URL for `hls/` may ask what it is playing). `filename` and the user's
 * `metadata` (possible PHI) are added only when the request also carries a
 * Bearer JWT of the video's owner or an admin. Served from the Redis cache of
 * meta.json when present, from disk otherwise.
 */
import { createAccessAudit, type AccessAttempt } from '../../shared/delivery/access-audit.js';
import { createAuditLog } from '../../shared/audit/client.js';
import { createAuthenticator, mayManageVideo, requireRole } from '../../shared/auth/jwt.js';
import { createCors } from '../../shared/delivery/cors.js';
import { MethodNotAllowedError, NotFoundError, UnauthorizedError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { sendJson } from '../../shared/platform/http.js';
import { mediaToken, parseMediaUrl } from '../../shared/delivery/media-path.js';
import { isVideoId, MediaStore } from '../../shared/video/store.js';
import { MetadataReader, metadataView, renditionsView } from '../../shared/delivery/metadata-view.js';
import { etagOf } from '../../shared/lifecycle/edit.js';
import { refuseIfDeleted } from '../../shared/lifecycle/tombstone.js';
import { openMirror } from '../../shared/mirror/mirror.js';
import { createRedis } from '../../shared/platform/redis.js';
import { createTokenCodec, tokenOptionsFromConfig } from '../../shared/delivery/tokens.js';
import { listVideos, parseListingQuery } from '../../shared/delivery/video-listing.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

export default defineFunction(async ({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'metadata', log });
  onShutdown(async () => void (await redis.quit()));
  const access = createAccessAudit(createAuditLog(config, redis, log), log, config.trustedProxies);
  const store = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
  const reader = new MetadataReader(store, redis, log);
  const tokens = createTokenCodec(tokenOptionsFromConfig(config));
  const cors = createCors({ origins: config.corsOrigins, methods: ['GET', 'HEAD', 'OPTIONS'], allowHeaders: ['Authorization'], exposeHeaders: ['ETag'] });
  const mirror = openMirror(config, log);
  onShutdown(async () => void (await mirror?.close()));

  return async (req, res, ctx) => {
    if (req.method === 'OPTIONS') return cors.preflight(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError(['GET', 'HEAD', 'OPTIONS']);
    if ((req.url ?? '').split('?')[0] === '/media/videos') {
      ctx.route = `${req.method} /media/videos`;
      // Authenticate first: a caller without a token learns nothing about the store.
      const principal = await auth.authenticate(req);
      if (principal.userId === null) throw new UnauthorizedError('listing needs an authenticated user');
      requireRole(principal, 'uploader');
      const query = parseListingQuery(new URL(req.url ?? '/', 'http://local').searchParams);
      return sendJson(res, 200, await listVideos({ mirror, store }, query, { userId: principal.userId, roles: principal.roles }), cors.headers(req));
    }
    const url = parseMediaUrl(req.url ?? '/');
    const view = url.rest;
    if (view !== 'metadata' && view !== 'renditions') throw new NotFoundError('no such route');
    ctx.route = `${req.method} /media/videos/:videoId/${view}`;

    const attempt: AccessAttempt = { action: view, req, requestId: ctx.requestId, videoId: url.videoId, resource: view, principal: null };
    const body = await access.check(attempt, async () => {
      const token = mediaToken(url);
      if (!isVideoId(url.videoId)) throw new NotFoundError('no such video');
      tokens.verifyForVideo(token, url.videoId);
      await refuseIfDeleted(config.videoDir, url.videoId);
      const meta = await reader.read(url.videoId);
      if (view === 'renditions') return { view: renditionsView(meta), etag: null };
      const wantsPrivate = req.headers.authorization !== undefined || auth.mode === 'insecure-dev';
      if (wantsPrivate) attempt.principal = await auth.authenticate(req);
      // The ETag an edit quotes in If-Match (shared/lifecycle/edit.ts).
      return { view: metadataView(meta, attempt.principal ? mayManageVideo(attempt.principal, meta.owner) : false), etag: etagOf(meta) };
    });
    await access.granted(attempt);
    sendJson(res, 200, body.view, { ...cors.headers(req), ...(body.etag ? { ETag: body.etag } : {}) });
  };
});
