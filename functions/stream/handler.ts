/**
 * stream: `GET|HEAD /media/videos/:videoId/:path?token=` — serves one media
 * file of a video to the holder of a signed URL, with ranges and validators,
 * and rewrites playlists so every child URI carries the same token;
 * `POST /media/videos/:videoId/:dir/clearkey?token=` — the content key of
 * encrypted renditions (shared/delivery/content-key.ts).
 *
 * Per request: one HMAC, one realpath + open + fstat, one audit entry, then one of
 * three answers (shared/delivery/): a grant of a whole rendition directory that the
 * media edge caches for the token's life (stream-grant.ts), a playlist rewritten for
 * the token (stream-playlist.ts), or the bytes — from the file descriptor, or behind
 * the media edge an X-Accel-Redirect so that nginx sends them (stream-bytes.ts).
 * meta.json is never read: the token alone says which video and which paths,
 * and the file system says what exists.
 */
import { createAccessAudit, type AccessAttempt } from '../../shared/delivery/access-audit.js';
import { createAuditLog } from '../../shared/audit/client.js';
import { createCors } from '../../shared/delivery/cors.js';
import { answerContentKey, isContentKeyPath } from '../../shared/delivery/content-key.js';
import { asksForGrant } from '../../shared/delivery/edge.js';
import { MethodNotAllowedError, NotFoundError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { MediaFiles, mediaToken, mediaTypeOf, parseMediaUrl, parseUrlMediaPath, playlistKind } from '../../shared/delivery/media-path.js';
import { isVideoId } from '../../shared/video/store.js';
import { refuseIfDeleted } from '../../shared/lifecycle/tombstone.js';
import { PlaylistCache } from '../../shared/delivery/playlist-rewrite.js';
import { createRedis } from '../../shared/platform/redis.js';
import { sendBytes } from '../../shared/delivery/stream-bytes.js';
import { answerGrant } from '../../shared/delivery/stream-grant.js';
import { sendPlaylist } from '../../shared/delivery/stream-playlist.js';
import { createTokenCodec, tokenOptionsFromConfig } from '../../shared/delivery/tokens.js';
import { openVideoKeys, UnwrappedKeyCache } from '../../shared/keys/video-keys.js';

export default defineFunction(async ({ config, log, onShutdown }) => {
  // A range of an original asks for its video's key each time.
  const keys = await openVideoKeys(config, new UnwrappedKeyCache());
  const redis = createRedis(config, { name: 'stream', log });
  onShutdown(async () => void (await redis.quit()));
  const access = createAccessAudit(createAuditLog(config, redis, log), log, config.trustedProxies);
  const tokens = createTokenCodec(tokenOptionsFromConfig(config));
  const files = new MediaFiles(config.videoDir);
  const playlists = new PlaylistCache();
  const cors = createCors({
    origins: config.corsOrigins,
    methods: ['GET', 'HEAD', 'POST', 'OPTIONS'],
    // Content-Type: the players' POST of a ClearKey license request.
    allowHeaders: ['Range', 'If-Range', 'If-None-Match', 'If-Modified-Since', 'Content-Type'],
    exposeHeaders: ['Content-Length', 'Content-Range', 'Accept-Ranges', 'ETag', 'Last-Modified'],
  });
  const fixedHeaders: Record<string, string> = {
    'Cache-Control': 'private',
    'X-Content-Type-Options': 'nosniff',
    // The URL carries the token: never hand it on in a Referer.
    'Referrer-Policy': 'no-referrer',
    ...(config.hstsEnabled ? { 'Strict-Transport-Security': 'max-age=31536000; includeSubDomains' } : {}),
  };

  return async (req, res, ctx) => {
    ctx.route = `${req.method} /media/videos/:videoId/:path`;
    if (req.method === 'OPTIONS') return cors.preflight(req, res);
    const url = parseMediaUrl(req.url ?? '/');
    const attempt: AccessAttempt = { action: 'stream', req, requestId: ctx.requestId, videoId: url.videoId, resource: url.rest };
    const fileHeaders = { ...fixedHeaders, ...cors.headers(req) };
    if (isContentKeyPath(url.rest)) {
      ctx.route = `${req.method} /media/videos/:videoId/:dir/clearkey`;
      if (req.method !== 'POST') throw new MethodNotAllowedError(['POST', 'OPTIONS']);
      return answerContentKey({ videoDir: config.videoDir, keys, tokens, access }, res, url, attempt, fileHeaders);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError(['GET', 'HEAD', 'OPTIONS']);
    if (asksForGrant(req)) return answerGrant({ videoDir: config.videoDir, tokens, access }, req, res, url, attempt, fileHeaders);

    const { token, mediaPath, ...opened } = await access.check(attempt, async () => {
      const token = mediaToken(url);
      if (!isVideoId(url.videoId)) throw new NotFoundError('no such video');
      const mediaPath = (attempt.resource = parseUrlMediaPath(url.rest));
      tokens.verify(token, url.videoId, mediaPath);
      await refuseIfDeleted(config.videoDir, url.videoId);
      return { token: token!, mediaPath, ...(await files.open(url.videoId, mediaPath)) };
    });
    try {
      await access.granted(attempt);
    } catch (err) {
      await opened.handle.close();
      throw err;
    }
    const headers = { ...fileHeaders, 'Content-Type': mediaTypeOf(mediaPath) };
    const kind = playlistKind(mediaPath);
    if (kind) return sendPlaylist(playlists, req, res, opened, kind, `${url.videoId}/${mediaPath}`, token, headers);
    return sendBytes({ videoDir: config.videoDir, keys, edgeKey: config.mediaEdgeKey }, req, res, url.videoId, mediaPath, opened, headers, fileHeaders);
  };
});
