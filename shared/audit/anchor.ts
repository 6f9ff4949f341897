/**
 * The anchor: each category's newest checkpointed head (file, seq, hash), kept
 * in Redis, off the audit volume. Checkpoints and MACs show what was changed
 * on the volume, not that the whole of it (logs, checkpoints, manifest) was
 * put back as it was earlier: every old file is validly signed. The anchor is
 * what such a copy cannot match: `pulsevault audit verify` reports a chain
 * that ends before its anchor, or differs at it, as `rolled back`.
 *
 * It only moves forward (a late or repeated write never moves it back). A
 * writer that starts on files behind it marks it (rolledBackAt) instead of
 * following the older chain: the mark stays, and verify keeps reporting it,
 * until an operator who has looked into it deletes the key. Redis losing the
 * key (a restart without persistence) loses only this check: verify notes it.
 */
import type { Redis } from '../platform/redis.js';
import { AUDIT_CATEGORIES, type AuditCategory } from './entry.js';

export interface Anchor {
  file: string;
  seq: number;
  hash: string;
  /** When the writer signed the checkpoint of this head. */
  at: string;
  /** Set by a writer that found the files behind this anchor: when, and the seq they ended at. */
  rolledBack: { at: string; volumeSeq: number } | null;
}

export function anchorKey(category: AuditCategory): string {
  return `pulsevault:audit:anchor:${category}`;
}

// Forward only, and frozen once marked.
const ADVANCE = `
local cur = redis.call('HMGET', KEYS[1], 'seq', 'rolledBackAt')
if cur[2] then return 0 end
if cur[1] and tonumber(cur[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'file', ARGV[2], 'hash', ARGV[3], 'at', ARGV[4])
return 1`;

export async function advanceAnchor(redis: Redis, category: AuditCategory, head: Omit<Anchor, 'rolledBack'>): Promise<void> {
  await redis.eval(ADVANCE, 1, anchorKey(category), String(head.seq), head.file, head.hash, head.at);
}

export async function markRolledBack(redis: Redis, category: AuditCategory, volumeSeq: number): Promise<void> {
  await redis.hset(anchorKey(category), 'rolledBackAt', new Date().toISOString(), 'volumeSeq', String(volumeSeq));
}

/** Every category's anchor that Redis holds. */
export async function readAnchors(redis: Redis): Promise<Map<AuditCategory, Anchor>> {
  const replies = (await AUDIT_CATEGORIES.reduce((p, category) => p.hgetall(anchorKey(category)), redis.pipeline()).exec()) ?? [];
  const anchors = new Map<AuditCategory, Anchor>();
  replies.forEach(([err, value], i) => {
    if (err) throw err;
    const h = value as Record<string, string>;
    if (!h.seq || !h.file || !h.hash) return;
    anchors.set(AUDIT_CATEGORIES[i]!, {
      file: h.file,
      seq: Number(h.seq),
      hash: h.hash,
      at: h.at ?? '',
      rolledBack: h.rolledBackAt ? { at: h.rolledBackAt, volumeSeq: Number(h.volumeSeq) } : null,
    });
  });
  return anchors;
}
