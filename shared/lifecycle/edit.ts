/**
 * `PATCH /media/videos/:id`: title, description, the user's metadata and the retention date, with
 * optimistic concurrency. The ETag versions what an edit can change (metadata, retainUntil,
 * legalHold), not the transcode's progress, so an edit during a transcode is not refused as stale.
 * A missing If-Match is 428: a client that never read the video cannot overwrite it by accident.
 * `video.updated` is audited before meta.json changes and names the changed fields (a code such as
 * `title.description`), never their values.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { z } from 'zod';
import { hasRole, type Principal } from '../auth/jwt.js';
import { parseStrictBody, userMetadataSchema, MAX_METADATA_BYTES } from '../finalize/request.js';
import { AppError, BadRequestError, ForbiddenError } from '../platform/errors.js';
import type { VideoMeta } from '../video/store.js';
import type { LifecycleDeps, LifecycleRequest } from './dispose.js';
import { refuseIfDeleted } from './tombstone.js';
import { eventFor, recordEvent } from '../webhooks/events.js';

const text = z.string().refine((v) => Buffer.byteLength(v) <= MAX_METADATA_BYTES, `must be at most ${MAX_METADATA_BYTES} bytes`);
const isoTime = z.iso.datetime({ offset: false }).transform((v) => new Date(v).toISOString());

const patchSchema = z.strictObject({
  title: text.optional(),
  description: text.optional(),
  metadata: userMetadataSchema.optional(),
  retainUntil: isoTime.nullable().optional(),
});
export type VideoPatch = z.output<typeof patchSchema>;

export function parseVideoPatch(body: unknown): VideoPatch {
  return parseStrictBody(patchSchema, body);
}

export function etagOf(meta: VideoMeta): string {
  const versioned = { metadata: meta.metadata, retainUntil: meta.retainUntil ?? null, legalHold: meta.legalHold ?? null };
  return `"${createHash('sha256').update(canonicalize(versioned) ?? '').digest('hex').slice(0, 32)}"`;
}

/** RFC 9110 §13.1.1: `*` or a list of strong ETags (a weak one never matches). */
function matches(ifMatch: string, etag: string): boolean {
  return ifMatch.trim() === '*' || ifMatch.split(',').some((tag) => tag.trim() === etag);
}

/** The edited document, and the names of the fields that changed. */
function applyPatch(meta: VideoMeta, patch: VideoPatch, principal: Principal): { next: VideoMeta; changed: string[] } {
  const metadata = { ...(patch.metadata ?? meta.metadata) };
  if (patch.title !== undefined) metadata.title = patch.title;
  if (patch.description !== undefined) metadata.description = patch.description;
  if (!userMetadataSchema.safeParse(metadata).success) throw new BadRequestError(`metadata: must be at most ${MAX_METADATA_BYTES} bytes as JSON with title and description`, 'invalid_field');
  const next: VideoMeta = { ...meta, metadata };
  const changed: string[] = [];
  for (const field of ['title', 'description'] as const) if (JSON.stringify(metadata[field]) !== JSON.stringify(meta.metadata[field])) changed.push(field);
  const { title: _t, description: _d, ...rest } = metadata;
  const { title: _ot, description: _od, ...oldRest } = meta.metadata;
  if (canonicalize(rest) !== canonicalize(oldRest)) changed.push('metadata');
  if (patch.retainUntil !== undefined && patch.retainUntil !== (meta.retainUntil ?? null)) {
    // An owner may keep a record longer, never shorter (null is "kept until deleted": longest of all).
    const current = meta.retainUntil ?? null;
    const lengthens = current !== null && (patch.retainUntil === null || patch.retainUntil > current);
    if (!hasRole(principal, 'admin') && !lengthens) throw new ForbiddenError('only an admin may shorten or set a retention date', 'retention_shortened');
    next.retainUntil = patch.retainUntil;
    changed.push('retain_until');
  }
  return { next, changed };
}

export async function editVideo(deps: LifecycleDeps, videoId: string, patch: VideoPatch, ifMatch: string | undefined, principal: Principal, request: LifecycleRequest): Promise<VideoMeta> {
  if (ifMatch === undefined) throw new AppError(428, 'precondition_required', 'an edit needs If-Match with the ETag of GET …/metadata');
  return deps.store.update(videoId, async (meta) => {
    await refuseIfDeleted(deps.config.videoDir, videoId);
    if (!matches(ifMatch, etagOf(meta))) throw new AppError(412, 'precondition_failed', 'the video changed since its ETag was read; read it again');
    const { next, changed } = applyPatch(meta, patch, principal);
    if (changed.length === 0) return meta;
    await deps.audit.record({ category: 'admin', action: 'video.updated', outcome: 'success', reason: changed.join('.'), actor: request.actor, videoId, clientIp: request.clientIp, requestId: request.requestId });
    // The webhook event is durable before meta.json changes, in the same locked step (shared/webhooks/events.ts).
    await recordEvent(deps.store.videoDir, eventFor('video.updated', meta, next));
    return next;
  });
}
