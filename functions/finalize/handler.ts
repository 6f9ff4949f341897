/**
 * finalize: `POST /uploads/finalize` turns a complete upload into a video
 * (shared/finalize/finalizer.ts) and answers `{videoId, status, size, checksum, transcoding, original}`.
 */
import { createAuditLog } from '../../shared/audit/client.js';
import { createAuthenticator, hasRole } from '../../shared/auth/jwt.js';
import { MethodNotAllowedError } from '../../shared/platform/errors.js';
import { Finalizer, type FinalizerDeps } from '../../shared/finalize/finalizer.js';
import { finalizeCaller } from '../../shared/finalize/caller.js';
import { measureFinalize } from '../../shared/finalize/metrics.js';
import { MAX_BODY_BYTES, parseFinalizeRequest } from '../../shared/finalize/request.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { clientIp, readJsonBody, sendJson } from '../../shared/platform/http.js';
import { MediaStore } from '../../shared/video/store.js';
import { attachMirror } from '../../shared/mirror/attach.js';
import { createRedis } from '../../shared/platform/redis.js';
import { RedisLocker } from '../../shared/uploads/locker.js';
import { openUploadStore } from '../../shared/uploads/store.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

const RECOVERY_INTERVAL_MS = 60_000;

/**
 * The crash tests' seam (test/helpers/crashing-finalize.mjs sets `onStep` before start-up and kills
 * the process at a step). Production sets nothing: no test switch exists in the function.
 */
export const stepObserver: Pick<FinalizerDeps, 'onStep'> = {};

export default defineFunction(async ({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'finalize', log });
  const locker = new RedisLocker(redis);
  const audit = createAuditLog(config, redis, log);
  const videos = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
  const mirror = attachMirror(videos, redis, config, log);
  const finalizer = new Finalizer({ config, redis, locker, audit, log, uploads: await openUploadStore(config), videos, onStep: stepObserver.onStep });

  // Finish whatever a crashed finalize (here or on another replica) left half-done.
  const recover = () => finalizer.recoverPending().catch((err: unknown) => log.error({ err }, 'finalize recovery pass failed'));
  await recover();
  const timer = setInterval(() => void recover(), RECOVERY_INTERVAL_MS);
  timer.unref();
  onShutdown(async () => {
    clearInterval(timer);
    await mirror?.close();
    await audit.close();
    await locker.close();
    redis.disconnect();
  });

  return async (req, res, ctx) => {
    ctx.route = 'POST /uploads/finalize';
    if (req.method !== 'POST') throw new MethodNotAllowedError(['POST']);
    const { response } = await measureFinalize(async () => {
      const principal = await auth.authenticate(req);
      const request = parseFinalizeRequest(await readJsonBody(req, MAX_BODY_BYTES));
      const caller = finalizeCaller(principal, request.userId);
      const context = { requestId: ctx.requestId, traceparent: ctx.traceparent, clientIp: clientIp(req, config.trustedProxies), callerIsAdmin: principal.authenticated && hasRole(principal, 'admin') };
      return finalizer.finalize(request, caller, context);
    });
    sendJson(res, 200, response);
  };
});
