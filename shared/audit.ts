/**
 * Audit logging API used by every function. Entries carry ids only (UUIDs,
 * user ids, roles), never titles, descriptions, filenames, tokens or raw IPs.
 *
 * INTERIM: entries are appended to a Redis stream; the hash-chained writer,
 * checkpoints and verifier land with the audit issue behind this same API.
 */
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { Redis } from './redis.js';

export type AuditCategory = 'access' | 'upload' | 'transcode' | 'admin';
export type AuditOutcome = 'granted' | 'denied' | 'success' | 'failure';

export interface AuditEvent {
  category: AuditCategory;
  /** What happened, e.g. `stream`, `sign`, `finalize`, `transcode.start`. */
  action: string;
  outcome: AuditOutcome;
  /** Machine-readable reason for a denial or failure, e.g. `token_expired`. */
  reason?: string | null;
  actor?: { userId: string | null; role: string | null } | null;
  videoId?: string | null;
  /** The caller's raw IP; the audit module anonymises it before it is stored. */
  clientIp?: string | null;
  requestId?: string | null;
}

export interface AuditLog {
  /** Resolves once the entry is durably recorded; rejects (AuditUnavailableError) otherwise. */
  record(event: AuditEvent): Promise<void>;
  close(): Promise<void>;
}

export const AUDIT_STREAM = 'pulsevault:audit:entries';

export function createAuditLog(_config: Config, redis: Redis, _log: Logger): AuditLog {
  return {
    async record(event) {
      await redis.xadd(AUDIT_STREAM, '*', 'entry', JSON.stringify({ ...event, ts: new Date().toISOString() }));
    },
    async close() {},
  };
}
