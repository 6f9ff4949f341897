/**
 * Legal hold (`PUT|DELETE /media/videos/:id/hold`, admins): while a video is held, delete and
 * retention refuse it with 409 `legal_hold`. Placing and releasing are audited (`video.hold`,
 * `video.hold_released`, the reason code) before meta.json changes; both are idempotent.
 */
import type { LegalHold, VideoMeta } from '../video/store.js';
import type { LifecycleDeps, LifecycleRequest } from './dispose.js';
import { refuseIfDeleted } from './tombstone.js';

export async function setLegalHold(deps: LifecycleDeps, videoId: string, held: boolean, reason: string, request: LifecycleRequest): Promise<VideoMeta> {
  return deps.store.update(videoId, async (meta) => {
    await refuseIfDeleted(deps.config.videoDir, videoId);
    const placed: LegalHold | null = held ? { since: meta.legalHold?.since ?? new Date().toISOString(), reason } : null;
    await deps.audit.record({
      category: 'admin',
      action: held ? 'video.hold' : 'video.hold_released',
      outcome: 'success',
      reason,
      actor: request.actor,
      videoId,
      clientIp: request.clientIp,
      requestId: request.requestId,
    });
    return { ...meta, legalHold: placed };
  });
}
