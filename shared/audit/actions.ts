/**
 * Every audit action there is, one entry each, with the category its entries
 * belong to. The one list: record() only takes these names (an unknown one does
 * not compile), and both ways into the writer (the intake and the Redis stream)
 * refuse an event whose action is not here or sits in another category.
 * A new action is one more line.
 */
import type { AuditCategory } from './entry.js';

export const AUDIT_ACTIONS = {
  sign: 'access',
  stream: 'access',
  metadata: 'access',
  renditions: 'access',
  content_key: 'access',
  finalize: 'upload',
  'transcode.queued': 'transcode',
  'transcode.requeued': 'transcode',
  'transcode.retry': 'transcode',
  'transcode.failed': 'transcode',
  'transcode.start': 'transcode',
  'transcode.join': 'transcode',
  'transcode.fanout': 'transcode',
  'transcode.complete': 'transcode',
  'transcode.error': 'transcode',
  'transcode.chunk.start': 'transcode',
  'transcode.chunk.complete': 'transcode',
  'transcode.preview': 'transcode',
  'video.updated': 'admin',
  'video.deleted': 'admin',
  'video.hold': 'admin',
  'video.hold_released': 'admin',
  'keys.rewrapped': 'admin',
  'keys.rotated': 'admin',
  'video.encrypted': 'admin',
  'video.media_encrypted': 'admin',
  'audit.report': 'admin',
  'audit.report.subject': 'admin',
  'webhook.created': 'admin',
  'webhook.rotated': 'admin',
  'webhook.deleted': 'admin',
} as const satisfies Record<string, AuditCategory>;

export type AuditAction = keyof typeof AUDIT_ACTIONS;

/** The actions of one category, e.g. AuditActionOf<'access'>. */
export type AuditActionOf<C extends AuditCategory> = { [A in AuditAction]: (typeof AUDIT_ACTIONS)[A] extends C ? A : never }[AuditAction];

export function isAuditAction(name: string): name is AuditAction {
  return Object.hasOwn(AUDIT_ACTIONS, name);
}
