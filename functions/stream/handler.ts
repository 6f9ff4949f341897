/**
 * stream: `GET|HEAD /media/videos/:videoId/:path?token=` — serves one media
 * file of a video to the holder of a signed URL, with ranges and validators,
 * and rewrites playlists so every child URI carries the same token.
 *
 * Per request: one HMAC, one realpath + open + fstat, one audit entry, then the
 * bytes straight from the file descriptor — or, behind the media edge
 * (shared/delivery/edge.ts), an X-Accel-Redirect so that nginx sends them, or a
 * grant of a whole rendition directory that nginx caches for the token's life.
 * meta.json is never read: the token alone says which video and which paths,
 * and the file system says what exists.
 */
import { createAccessAudit, type AccessAttempt } from '../../shared/delivery/access-audit.js';
import { createAuditLog } from '../../shared/audit/client.js';
import { createCors } from '../../shared/delivery/cors.js';
import { asksForGrant, edgeRedirect, grantSecondsFor, viaEdge } from '../../shared/delivery/edge.js';
import { AppError, ForbiddenError, MethodNotAllowedError, NotFoundError, RangeNotSatisfiableError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { MediaFiles, mediaToken, mediaTypeOf, parseGrantUnit, parseMediaUrl, parseUrlMediaPath, playlistKind } from '../../shared/delivery/media-path.js';
import { fileVersionOf, planResponse, streamFile, validatorsOf } from '../../shared/delivery/media-response.js';
import { isVideoId } from '../../shared/video/store.js';
import { refuseIfDeleted } from '../../shared/lifecycle/tombstone.js';
import { counter } from '../../shared/platform/metrics.js';
import { PlaylistCache } from '../../shared/delivery/playlist-rewrite.js';
import { createRedis } from '../../shared/platform/redis.js';
import { createTokenCodec, tokenOptionsFromConfig } from '../../shared/delivery/tokens.js';
import { encryptedOriginal, isEncryptedOriginal, sendEncryptedOriginal } from '../../shared/crypto/original-response.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

/** Larger "playlists" are refused rather than read into memory. */
const MAX_PLAYLIST_BYTES = 16 * 1024 * 1024;

export default defineFunction(async ({ config, log, onShutdown }) => {
  const keys = await openVideoKeys(config);
  const redis = createRedis(config, { name: 'stream', log });
  onShutdown(async () => void (await redis.quit()));
  const access = createAccessAudit(createAuditLog(config, redis, log), log, config.trustedProxies);
  const tokens = createTokenCodec(tokenOptionsFromConfig(config));
  const files = new MediaFiles(config.videoDir);
  const playlists = new PlaylistCache();
  const cors = createCors({
    origins: config.corsOrigins,
    methods: ['GET', 'HEAD', 'OPTIONS'],
    allowHeaders: ['Range', 'If-Range', 'If-None-Match', 'If-Modified-Since'],
    exposeHeaders: ['Content-Length', 'Content-Range', 'Accept-Ranges', 'ETag', 'Last-Modified'],
  });
  const bytesServed = counter({ name: 'pulsevault_stream_bytes_total', help: 'Media bytes the stream function sent itself (not those the media edge sends; see its access log).' });
  const edgeGrants = counter({ name: 'pulsevault_stream_edge_grants_total', help: 'Grants the media edge asked for, by outcome (a refusal is then decided, and audited, per request).', labelNames: ['outcome'] as const });
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
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError(['GET', 'HEAD', 'OPTIONS']);

    const url = parseMediaUrl(req.url ?? '/');
    const attempt: AccessAttempt = { action: 'stream', req, requestId: ctx.requestId, videoId: url.videoId, resource: url.rest };

    if (asksForGrant(req)) {
      let seconds: number;
      try {
        seconds = grantSecondsFor(req, url, tokens);
        // Refused here, the whole request comes to the function, which answers it 410.
        await refuseIfDeleted(config.videoDir, url.videoId);
        // nginx would send ciphertext: the function decrypts these itself.
        if (await isEncryptedOriginal(config.videoDir, url.videoId, parseGrantUnit(url.rest))) throw new Error('encrypted');
      } catch {
        edgeGrants.inc({ outcome: 'refused' });
        // Not audited here: nginx now sends the whole request, which is decided and audited as usual.
        throw new ForbiddenError('the edge sends this request to be decided on its own', 'edge_grant_refused');
      }
      await access.granted(attempt);
      edgeGrants.inc({ outcome: 'granted' });
      res.writeHead(200, { ...fixedHeaders, ...cors.headers(req), 'X-Accel-Expires': String(seconds), 'Content-Length': '0' });
      return void res.end();
    }
    const { token, mediaPath, handle, stat, realPath } = await access.check(attempt, async () => {
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
      await handle.close();
      throw err;
    }
    const headers = { ...fixedHeaders, ...cors.headers(req), 'Content-Type': mediaTypeOf(mediaPath) };
    const encrypted = await encryptedOriginal(keys, url.videoId, mediaPath, handle).catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    if (encrypted) return void bytesServed.inc(await sendEncryptedOriginal(req, res, encrypted, validatorsOf(stat), headers, { ...fixedHeaders, ...cors.headers(req) }));

    const kind = playlistKind(mediaPath);
    if (kind) {
      let body: string;
      try {
        if (stat.size > MAX_PLAYLIST_BYTES) throw new AppError(500, 'playlist_too_large', 'playlist too large to serve');
        const key = `${url.videoId}/${mediaPath}@${fileVersionOf(stat)}`;
        body = await playlists.render(kind, key, () => handle.readFile('utf8'), token);
      } finally {
        await handle.close();
      }
      // Rewritten per token: no validators and no ranges (players fetch playlists whole).
      res.writeHead(200, { ...headers, 'Accept-Ranges': 'none', 'Content-Length': String(Buffer.byteLength(body)) });
      return void res.end(req.method === 'HEAD' ? undefined : body);
    }

    const plan = planResponse({ size: Number(stat.size), validators: validatorsOf(stat) }, req.headers);
    const edge = viaEdge(req);
    if (plan.status === 416 || plan.status === 304 || req.method === 'HEAD' || edge) await handle.close();
    // About the file, as nginx answers it: the file's validator and the media headers, not an error's no-store.
    if (plan.status === 416) throw new RangeNotSatisfiableError(Number(stat.size), { ...fixedHeaders, ...cors.headers(req), ETag: plan.headers.ETag! });
    if (edge && plan.status !== 304) {
      // nginx sends the bytes (or the headers of a HEAD) as planned here.
      const send = plan.status === 206 ? 'range' : 'whole';
      res.writeHead(200, { ...headers, ETag: plan.headers.ETag!, ...(plan.status === 200 ? { 'Accept-Ranges': 'bytes' } : {}), 'X-Accel-Redirect': edgeRedirect(send, url.videoId, realPath), 'Content-Length': '0' });
      return void res.end();
    }
    // As nginx: a 304 has no body whose type to give.
    const { 'Content-Type': _type, ...headersOf304 } = headers;
    res.writeHead(plan.status, { ...(plan.status === 304 ? headersOf304 : headers), ...plan.headers });
    if (plan.status === 304 || req.method === 'HEAD') return void res.end();
    bytesServed.inc(await streamFile(res, handle, plan.start, plan.end));
  };
});
