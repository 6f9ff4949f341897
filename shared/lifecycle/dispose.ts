/**
 * Audited disposal of a video (`DELETE /media/videos/:id`, `pulsevault retention run`).
 * The steps, each safe to repeat, in this order:
 *
 *   audit     `video.deleted` durable in the audit log (audit down → 503, nothing changed);
 *   mark      the deleted mark (./tombstone.ts): from here every reader answers 410;
 *   tombstone meta.json becomes the tombstone (shared/video/state.ts markDeleted; the mirror follows);
 *   shred     the video's data key is destroyed (shared/keys/): before a single media file goes, every
 *             copy of its ciphertext — on this disk's free blocks, in snapshots and backups — is noise;
 *   stop      the video's transcode leases are revoked: a running ffmpeg is aborted, and a transcode
 *             that still publishes finds the tombstone and removes what it published;
 *   remove    every file but meta.json and the mark: original, renditions, preview, thumbnails,
 *             poster, chunk parts, work dirs, the finalize journal entry;
 *   disposed  the tombstone records `disposedAt`.
 *
 * The first three happen under the video's meta.json lock, so a legal hold and a delete never
 * cross. A crash after `mark` leaves a video refused everywhere; a retry (the same DELETE) or the
 * sweep (`sweepDisposals`: the videos function's timer, `pulsevault retention run`) finishes it.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import { subjectPseudonym } from '../audit/subject.js';
import { FinalizeJournal } from '../finalize/journal.js';
import { destroyDataKey } from '../keys/video-keys.js';
import type { Config } from '../platform/config.js';
import { ConflictError, NotFoundError } from '../platform/errors.js';
import type { Logger } from '../platform/log.js';
import type { Redis } from '../platform/redis.js';
import { clearChunkProgress } from '../transcode/fanout.js';
import { revokeTranscodeLeases } from '../transcode/lease.js';
import { markDeleted } from '../video/state.js';
import { isVideoId, type Deletion, type MediaStore, type VideoMeta } from '../video/store.js';
import type { DeleteReason } from './reasons.js';
import { DELETED_MARK, writeDeletedMark } from './tombstone.js';

export const DISPOSAL_STEPS = ['audit', 'mark', 'tombstone', 'shred', 'stop', 'remove', 'disposed'] as const;
export type DisposalStep = (typeof DISPOSAL_STEPS)[number];

export interface LifecycleDeps {
  config: Config;
  store: MediaStore;
  redis: Redis;
  audit: AuditLog;
  log: Logger;
  /** Tests' seam: called before each step (test/lifecycle.test.ts fails a disposal there, test/lifecycle-crash.test.ts kills the process). */
  onStep?: (step: DisposalStep, videoId: string) => void | Promise<void>;
}

/** Who asks: a caller of the API, or null for the retention run. */
export interface LifecycleRequest {
  actor: { userId: string | null; role: string | null } | null;
  requestId: string | null;
  clientIp: string | null;
}

const KEPT = new Set(['meta.json', DELETED_MARK]);
/** A transcode may publish into the directory while it is emptied: a few passes until it stays empty. */
const REMOVE_PASSES = 5;

/** The tombstone's public view (the answer of DELETE, the body of nothing else). */
export function tombstoneView(meta: VideoMeta): Record<string, unknown> {
  return {
    videoId: meta.videoId,
    status: meta.status,
    deletedAt: meta.deletion?.deletedAt ?? null,
    deletedBy: meta.deletion?.deletedBy ?? null,
    reason: meta.deletion?.reason ?? null,
    disposedAt: meta.deletion?.disposedAt ?? null,
    original: { checksum: meta.checksum, size: meta.size },
  };
}

/** `expiredBy`: dispose only if the video's retainUntil has passed by then (retention re-checks under the lock). */
export async function disposeVideo(deps: LifecycleDeps, videoId: string, reason: DeleteReason, request: LifecycleRequest, expiredBy: Date | null = null): Promise<VideoMeta> {
  const { config, store, audit } = deps;
  const step = async (name: DisposalStep) => deps.onStep?.(name, videoId);
  const deletion: Omit<Deletion, 'disposedAt'> = {
    deletedAt: new Date().toISOString(),
    deletedBy: request.actor?.userId ? subjectPseudonym(config.hmacSecret, request.actor.userId) : null,
    reason,
  };
  const { meta } = await markDeleted(store, videoId, deletion, async (current) => {
    if (current.legalHold) throw new ConflictError('the video is under a legal hold', 'legal_hold');
    if (expiredBy && !(current.retainUntil && Date.parse(current.retainUntil) <= expiredBy.getTime())) throw new ConflictError('the video is no longer past its retention date', 'not_expired');
    await step('audit');
    await audit.record({ category: 'admin', action: 'video.deleted', outcome: 'success', reason, actor: request.actor, videoId, clientIp: request.clientIp, requestId: request.requestId });
    await step('mark');
    await writeDeletedMark(config.videoDir, videoId, deletion);
    await step('tombstone');
  });
  return finishDisposal(deps, meta);
}

/** The steps after the tombstone, for a tombstone in any state (idempotent). */
export async function finishDisposal(deps: LifecycleDeps, tombstone: VideoMeta): Promise<VideoMeta> {
  const { store, redis, log, config } = deps;
  const { videoId } = tombstone;
  const step = async (name: DisposalStep) => deps.onStep?.(name, videoId);
  await step('shred');
  await destroyDataKey(config.keyDir, videoId);
  await step('stop');
  await revokeTranscodeLeases(redis, videoId);
  await clearChunkProgress(redis, videoId);
  await step('remove');
  const removed = await removeVideoFiles(store.dir(videoId));
  if (tombstone.uploadId) await FinalizeJournal.of(store.videoDir).remove(tombstone.uploadId);
  if (tombstone.deletion?.disposedAt) {
    if (removed > 0) log.warn({ videoId, removed }, 'removed files published into a disposed video');
    return tombstone;
  }
  await step('disposed');
  const done = await store.update(videoId, (m) => (m.deletion && !m.deletion.disposedAt ? { ...m, deletion: { ...m.deletion, disposedAt: new Date().toISOString() } } : m));
  log.info({ videoId, removed }, 'video disposed of');
  return done;
}

/** Everything in the video directory but meta.json and the mark; how many entries went. */
export async function removeVideoFiles(dir: string): Promise<number> {
  let removed = 0;
  for (let pass = 0; pass < REMOVE_PASSES; pass++) {
    const extra = (await readdir(dir)).filter((name) => !KEPT.has(name));
    if (extra.length === 0) return removed;
    await Promise.all(extra.map((name) => rm(path.join(dir, name), { recursive: true, force: true })));
    removed += extra.length;
  }
  return removed;
}

/**
 * Finish every disposal a crash or a late transcode left unfinished: a marked video whose meta.json
 * is not yet the tombstone (its audit entry is already durable: the mark names the deletion), a
 * tombstone without `disposedAt`, or files in a disposed video's directory.
 */
export async function sweepDisposals(deps: LifecycleDeps): Promise<{ finished: number; errors: number }> {
  const { store, log } = deps;
  let finished = 0;
  let errors = 0;
  for (const name of await readdir(store.videoDir).catch(() => [] as string[])) {
    if (!isVideoId(name)) continue;
    const dir = store.dir(name);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch {
      continue;
    }
    if (!entries.includes(DELETED_MARK)) continue;
    try {
      let meta = await store.read(name);
      if (meta.status !== 'deleted') {
        const deletion = JSON.parse(await readFile(path.join(dir, DELETED_MARK), 'utf8')) as Omit<Deletion, 'disposedAt'>;
        ({ meta } = await markDeleted(store, name, deletion, async () => {}));
      }
      if (meta.deletion?.disposedAt && entries.every((e) => KEPT.has(e))) continue;
      await finishDisposal(deps, meta);
      finished++;
    } catch (err) {
      if (err instanceof NotFoundError) continue;
      errors++;
      log.warn({ videoId: name, err: (err as Error).message }, 'cannot finish the disposal');
    }
  }
  return { finished, errors };
}
