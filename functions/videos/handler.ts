/**
 * videos: the records lifecycle of one video (shared/lifecycle/).
 *
 *   PATCH  /media/videos/:videoId          {title?, description?, metadata?, retainUntil?} + If-Match → the metadata view, new ETag
 *   DELETE /media/videos/:videoId?reason=  (or JSON {reason}) → the tombstone; again → the same tombstone
 *   PUT    /media/videos/:videoId/hold     {reason} (admin) → the metadata view
 *   DELETE /media/videos/:videoId/hold     {reason} or ?reason= (admin) → the metadata view
 *
 * Edit and delete: the owner (uploader role) or an admin. A timer finishes disposals a crash left
 * half-done and counts the videos past retention (pulsevault_videos_past_retention).
 */
import type { IncomingMessage } from 'node:http';
import { createAuditLog } from '../../shared/audit/client.js';
import { auditRole, createAuthenticator, mayManageVideo, requireRole, type Principal } from '../../shared/auth/jwt.js';
import { createCors } from '../../shared/delivery/cors.js';
import { metadataView } from '../../shared/delivery/metadata-view.js';
import { disposeVideo, sweepDisposals, tombstoneView, type LifecycleDeps, type LifecycleRequest } from '../../shared/lifecycle/dispose.js';
import { editVideo, etagOf, parseVideoPatch } from '../../shared/lifecycle/edit.js';
import { setLegalHold } from '../../shared/lifecycle/hold.js';
import { DELETE_REASONS, HOLD_REASONS, isOneOf, RELEASE_REASONS } from '../../shared/lifecycle/reasons.js';
import { pastRetention } from '../../shared/lifecycle/retention.js';
import { attachMirror } from '../../shared/mirror/attach.js';
import { BadRequestError, ForbiddenError, MethodNotAllowedError, NotFoundError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { clientIp, readJsonBody, sendJson } from '../../shared/platform/http.js';
import { gauge } from '../../shared/platform/metrics.js';
import { createRedis } from '../../shared/platform/redis.js';
import { isVideoId, MediaStore, type VideoMeta } from '../../shared/video/store.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

const SWEEP_INTERVAL_MS = 5 * 60_000;
/** Observes each disposal step; the crash test kills the process there (test/helpers/crashing-videos.mjs). */
export const stepObserver: Pick<LifecycleDeps, 'onStep'> = {};
const ROUTE = /^\/media\/videos\/([^/?]+)(\/hold)?(?:\?(.*))?$/;

/** The reason code of a request: `?reason=` or a JSON body `{reason}`. */
async function reasonOf<T extends string>(req: IncomingMessage, query: URLSearchParams, codes: readonly T[]): Promise<T> {
  let reason: unknown = query.get('reason');
  if (reason === null && req.headers['content-type'] !== undefined) {
    const body = await readJsonBody(req);
    reason = typeof body === 'object' && body !== null ? (body as { reason?: unknown }).reason : undefined;
  }
  if (!isOneOf(codes, reason)) throw new BadRequestError(`reason must be one of ${codes.join(', ')}`, 'invalid_reason');
  return reason;
}

export default defineFunction(async ({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'videos', log });
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
  const mirror = attachMirror(store, redis, config, log);
  const deps: LifecycleDeps = { config, store, redis, audit, log, onStep: stepObserver.onStep };
  const cors = createCors({ origins: config.corsOrigins, methods: ['PATCH', 'DELETE', 'PUT', 'OPTIONS'], allowHeaders: ['Authorization', 'Content-Type', 'If-Match'], exposeHeaders: ['ETag'] });

  const past = gauge({ name: 'pulsevault_videos_past_retention', help: 'Videos past their retainUntil and not yet disposed of, by whether a legal hold keeps them (as of the last sweep).', labelNames: ['held'] as const });
  const sweep = async () => {
    try {
      const { errors } = await sweepDisposals(deps);
      if (errors > 0) log.warn({ errors }, 'some disposals could not be finished');
      const found = await pastRetention(store);
      past.set({ held: 'true' }, found.filter((v) => v.held).length);
      past.set({ held: 'false' }, found.filter((v) => !v.held).length);
    } catch (err) {
      log.error({ err }, 'lifecycle sweep failed');
    }
  };
  await sweep();
  const timer = setInterval(() => void sweep(), SWEEP_INTERVAL_MS);
  timer.unref();
  onShutdown(async () => {
    clearInterval(timer);
    await mirror?.close();
    await audit.close();
    redis.disconnect();
  });

  /** The video, if the caller may manage it (404 before 403: an unknown id says nothing more). */
  const managed = async (principal: Principal, videoId: string): Promise<VideoMeta> => {
    if (!isVideoId(videoId)) throw new NotFoundError('no such video');
    const meta = await store.read(videoId);
    if (!mayManageVideo(principal, meta.owner)) throw new ForbiddenError('only the owner of a video or an admin may change it', 'not_owner');
    return meta;
  };

  return async (req, res, ctx) => {
    const m = ROUTE.exec(req.url ?? '');
    if (!m) throw new NotFoundError('no such route');
    const [, videoId = '', hold, rawQuery] = m;
    ctx.route = `${req.method} /media/videos/:videoId${hold ?? ''}`;
    if (req.method === 'OPTIONS') return cors.preflight(req, res);
    const allowed = hold ? ['PUT', 'DELETE', 'OPTIONS'] : ['PATCH', 'DELETE', 'OPTIONS'];
    if (!allowed.includes(req.method ?? '')) throw new MethodNotAllowedError(allowed);
    const query = new URLSearchParams(rawQuery ?? '');

    const principal = await auth.authenticate(req);
    const request: LifecycleRequest = { actor: { userId: principal.userId, role: auditRole(principal) }, requestId: ctx.requestId, clientIp: clientIp(req, config.trustedProxies) };
    const answer = (meta: VideoMeta) => sendJson(res, 200, metadataView(meta, true), { ...cors.headers(req), ETag: etagOf(meta) });

    if (hold) {
      requireRole(principal, 'admin');
      await managed(principal, videoId);
      const held = req.method === 'PUT';
      return answer(await setLegalHold(deps, videoId, held, await reasonOf(req, query, held ? HOLD_REASONS : RELEASE_REASONS), request));
    }
    requireRole(principal, 'uploader');
    if (req.method === 'PATCH') {
      await managed(principal, videoId);
      const patch = parseVideoPatch(await readJsonBody(req));
      const ifMatch = req.headers['if-match'];
      return answer(await editVideo(deps, videoId, patch, Array.isArray(ifMatch) ? ifMatch.join(',') : ifMatch, principal, request));
    }
    const reason = await reasonOf(req, query, DELETE_REASONS);
    await managed(principal, videoId);
    sendJson(res, 200, tombstoneView(await disposeVideo(deps, videoId, reason, request)), cors.headers(req));
  };
});
