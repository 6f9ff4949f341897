/**
 * sign: `POST /media/sign {videoId, path, expiresIn?}` → `{url, expiresAt, expiresIn}`.
 *
 * The caller must be authenticated (Bearer JWT) and own the video or be an
 * admin. `expiresIn` defaults to TOKEN_EXPIRY_SECONDS and is clamped to it (the
 * response says what was granted). A playlist or manifest path grants its
 * directory; any other path grants that one file.
 */
import { createAccessAudit, type AccessAttempt } from '../../shared/delivery/access-audit.js';
import { createAuditLog } from '../../shared/audit/client.js';
import { createAuthenticator, mayManageVideo, requireRole } from '../../shared/auth/jwt.js';
import { createCors } from '../../shared/delivery/cors.js';
import { BadRequestError, ForbiddenError, MethodNotAllowedError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { readJsonBody, sendJson } from '../../shared/platform/http.js';
import { MediaFiles, parseMediaPath, scopeForPath } from '../../shared/delivery/media-path.js';
import { isVideoId, MediaStore } from '../../shared/video/store.js';
import { MetadataReader } from '../../shared/delivery/metadata-view.js';
import { refuseIfDeleted } from '../../shared/lifecycle/tombstone.js';
import { createRedis } from '../../shared/platform/redis.js';
import { createTokenCodec, tokenOptionsFromConfig } from '../../shared/delivery/tokens.js';
import { z } from 'zod';

const SignRequest = z.object({
  videoId: z.string().refine(isVideoId, 'must be a lowercase UUID'),
  path: z.string().min(1).max(512),
  expiresIn: z.number().int().positive().optional(),
});

export default defineFunction(({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'sign', log });
  onShutdown(async () => void (await redis.quit()));
  const access = createAccessAudit(createAuditLog(config, redis, log), log, config.trustedProxies);
  const reader = new MetadataReader(new MediaStore(config.videoDir, redis), redis, log);
  const files = new MediaFiles(config.videoDir);
  const tokens = createTokenCodec(tokenOptionsFromConfig(config));
  const cors = createCors({ origins: config.corsOrigins, methods: ['POST', 'OPTIONS'], allowHeaders: ['Authorization', 'Content-Type'] });

  return async (req, res, ctx) => {
    ctx.route = `${req.method} /media/sign`;
    if (req.method === 'OPTIONS') return cors.preflight(req, res);
    if (req.method !== 'POST') throw new MethodNotAllowedError(['POST', 'OPTIONS']);

    const attempt: AccessAttempt = { action: 'sign', req, requestId: ctx.requestId, videoId: null, principal: null };
    const grant = await access.check(attempt, async () => {
      const principal = (attempt.principal = await auth.authenticate(req));
      requireRole(principal, 'uploader'); // before any lookup: a caller who may sign nothing learns nothing
      const parsed = SignRequest.safeParse(await readJsonBody(req));
      if (!parsed.success) throw new BadRequestError(`invalid sign request: ${parsed.error.issues[0]?.path.join('.') ?? ''} ${parsed.error.issues[0]?.message ?? ''}`.trim());
      const { videoId, expiresIn } = parsed.data;
      attempt.videoId = videoId;
      const path = (attempt.resource = parseMediaPath(parsed.data.path));
      const scope = scopeForPath(path);
      const meta = await reader.read(videoId);
      if (!mayManageVideo(principal, meta.owner)) throw new ForbiddenError('only the owner of a video or an admin may sign its URLs', 'not_owner');
      await refuseIfDeleted(config.videoDir, videoId);
      await (await files.open(videoId, path)).handle.close(); // 404 for files that do not exist (yet)
      return { videoId, path, scope, expiresIn: Math.min(expiresIn ?? config.tokenExpirySeconds, config.tokenExpirySeconds) };
    });

    const exp = Math.floor(Date.now() / 1000) + grant.expiresIn;
    const token = tokens.sign({ videoId: grant.videoId, exp, scope: grant.scope });
    // What the token opens: the file, or a playlist's whole directory.
    attempt.resource = grant.scope;
    await access.granted(attempt);
    sendJson(
      res,
      200,
      { url: `/media/videos/${grant.videoId}/${grant.path}?token=${token}`, expiresAt: new Date(exp * 1000).toISOString(), expiresIn: grant.expiresIn },
      cors.headers(req),
    );
  };
});
