/**
 * Who a finalize is for. With JWT auth: the token's subject, who must hold the
 * uploader role; a body `userId` naming someone else is refused, except from an
 * admin finalizing on a user's behalf. In development without auth the body (or
 * the dev header) names the owner.
 */
import { auditRole, hasRole, requireRole, type Principal } from '../auth/jwt.js';
import { BadRequestError, ForbiddenError } from '../platform/errors.js';
import type { Caller } from './journal.js';

export function finalizeCaller(principal: Principal, bodyUserId: string | undefined): Caller {
  requireRole(principal, 'uploader');
  if (principal.authenticated) {
    const onBehalf = bodyUserId !== undefined && bodyUserId !== principal.userId;
    if (onBehalf && !hasRole(principal, 'admin')) throw new ForbiddenError('userId must be your own user id', 'user_mismatch');
    return { userId: onBehalf ? bodyUserId : principal.userId!, role: auditRole(principal) };
  }
  const userId = bodyUserId ?? principal.userId;
  if (!userId) throw new BadRequestError('userId: is required when the vault runs without authentication', 'invalid_field');
  return { userId, role: null };
}
