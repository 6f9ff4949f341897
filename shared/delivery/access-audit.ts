/**
 * `access` audit entries for media delivery (sign, stream, metadata): one per
 * granted and per denied request, with ids only (video UUID, user id, role,
 * reason, the media path within the video) — never the token, the path's PHI or a raw IP (shared/audit/client.ts
 * anonymises it). Fail closed: when the entry cannot be recorded the request
 * is refused with 503 instead of being served unaudited.
 */
import type { IncomingMessage } from 'node:http';
import type { AuditActionOf } from '../audit/actions.js';
import type { AuditLog } from '../audit/client.js';
import { isAuditResource } from '../audit/entry.js';
import { auditRole, type Principal } from '../auth/jwt.js';
import { AppError, ForbiddenError, ServiceUnavailableError } from '../platform/errors.js';
import { clientIp } from '../platform/http.js';
import type { Logger } from '../platform/log.js';
import { counter } from '../platform/metrics.js';
import { isVideoId } from '../video/store.js';
import { TokenError } from './tokens.js';

export interface AccessAttempt {
  action: AuditActionOf<'access'>;
  req: IncomingMessage;
  requestId: string;
  /** Recorded only when it is a UUID (never a raw path segment). */
  videoId: string | null;
  /**
   * The path within the video served, refused or signed (`hls/720p/seg_003.m4s`, the scope `hls/`,
   * `metadata`). Recorded only when it has a media path's form (a request's hostile path is dropped).
   */
  resource?: string | null;
  principal?: Principal | null;
}

export interface AccessAudit {
  granted(attempt: AccessAttempt): Promise<void>;
  /**
   * Run the checks of a request; when they throw, record the denial (reason: the
   * token's, or the error code) and rethrow, a token refusal as 403.
   */
  check<T>(attempt: AccessAttempt, checks: () => Promise<T>): Promise<T>;
}

/** `trustedProxies`: whose X-Forwarded-For names the client (config.trustedProxies, shared/platform/http.ts clientIp). */
export function createAccessAudit(audit: AuditLog, log: Logger, trustedProxies: readonly string[]): AccessAudit {
  const tokenDenials = counter({
    name: 'pulsevault_token_denials_total',
    help: 'Media requests refused because of their signed-URL token, by reason (expired, bad_signature, out_of_scope, ...).',
    labelNames: ['reason'] as const,
  });

  async function record(attempt: AccessAttempt, outcome: 'granted' | 'denied', reason: string | null): Promise<void> {
    const { principal } = attempt;
    try {
      await audit.record({
        category: 'access',
        action: attempt.action,
        outcome,
        reason,
        actor: principal ? { userId: principal.userId, role: auditRole(principal) } : null,
        videoId: attempt.videoId && isVideoId(attempt.videoId) ? attempt.videoId : null,
        clientIp: clientIp(attempt.req, trustedProxies),
        requestId: attempt.requestId,
        resource: attempt.resource && isAuditResource(attempt.resource) ? attempt.resource : null,
      });
    } catch (err) {
      log.error({ err: (err as Error).message, action: attempt.action, outcome }, 'audit entry could not be recorded; refusing access');
      throw new ServiceUnavailableError('the audit log is unavailable', 'audit_unavailable');
    }
  }

  return {
    granted: (attempt) => record(attempt, 'granted', null),
    async check(attempt, checks) {
      try {
        return await checks();
      } catch (err) {
        const reason = err instanceof TokenError ? err.reason : err instanceof AppError ? err.code : 'internal';
        if (err instanceof TokenError) tokenDenials.inc({ reason });
        await record(attempt, 'denied', reason);
        throw err instanceof TokenError ? new ForbiddenError('the signed URL does not grant this', reason) : err;
      }
    },
  };
}
