/**
 * A video's status and every move between statuses. A video is created
 * `uploaded` (finalize); after that nothing else writes `meta.status`: finalize,
 * the queue, the transcoder and the queue connector call the `mark*` functions
 * here, each one read-modify-write under the media store's per-video lock.
 *
 *   uploaded → queued → transcoding → transcoded
 *                ↑  ↖______/  |           |
 *                |    retry   ↓           |
 *                └──────── failed ←───────┘ (requeue: failed/transcoded → queued)
 *
 *   any status → deleted (dispose: shared/lifecycle/dispose.ts). Terminal: every other
 *   move keeps a deleted video deleted, so a late transcode write never resurrects it.
 *
 * Each move lists the statuses it moves FROM and the statuses it KEEPS (leaves
 * as they are, because a known race already moved the video on). Any other
 * starting status is a bug or a hand-edited meta.json: the move is refused with
 * IllegalTransitionError and meta.json is left untouched.
 */
import { ConflictError } from '../platform/errors.js';
import type { VideoCodecFamily } from '../transcode/ladder.js';
import { eventFor, recordEvent, type EventType } from '../webhooks/events.js';
import type { Deletion, MediaStore, RenditionRung, VideoMeta, VideoOutputs } from './store.js';

export const VIDEO_STATUSES = ['uploaded', 'queued', 'transcoding', 'transcoded', 'failed', 'deleted'] as const;
export type VideoStatus = (typeof VIDEO_STATUSES)[number];

export function isVideoStatus(value: unknown): value is VideoStatus {
  return (VIDEO_STATUSES as readonly unknown[]).includes(value);
}

/**
 * `GET …/renditions` status: the video's status, except that the spec names a transcoded video's
 * renditions `ready` (deployment guide, GET /media/videos/:videoId/renditions).
 */
export function renditionsStatus(status: VideoStatus): Exclude<VideoStatus, 'transcoded'> | 'ready' {
  return status === 'transcoded' ? 'ready' : status;
}

interface Move {
  to: VideoStatus;
  from: readonly VideoStatus[];
  keep: readonly VideoStatus[];
}

/** Every legal transition, in one place. */
export const MOVES = {
  /** Finalize queued the first job. The job may already have reached a transcoder (and even finished or failed). */
  queue: { to: 'queued', from: ['uploaded'], keep: ['queued', 'transcoding', 'transcoded', 'failed', 'deleted'] },
  /** A new job for an existing video (requeue). A video that already has a job on it is left alone. */
  requeue: { to: 'queued', from: ['uploaded', 'failed', 'transcoded'], keep: ['queued', 'transcoding', 'deleted'] },
  /**
   * A transcoder took the job. From `uploaded`: the job beat finalize's `queued`; `transcoding`: a
   * redelivery after a crash or a lost lease; `transcoded`: the published outputs are missing;
   * `failed`: the connector gave up on an invocation that was still starting.
   */
  start: { to: 'transcoding', from: ['uploaded', 'queued', 'transcoding', 'transcoded', 'failed'], keep: ['deleted'] },
  /** Progress is only news while transcoding; a late write after another status is dropped. */
  progress: { to: 'transcoding', from: ['transcoding'], keep: ['uploaded', 'queued', 'transcoded', 'failed', 'deleted'] },
  /**
   * The outputs are published, so the video is transcoded whatever the connector concluded meanwhile
   * (`queued`/`failed` after it timed out the invocation); `transcoded` again after a lease takeover.
   */
  complete: { to: 'transcoded', from: ['transcoding', 'queued', 'failed', 'transcoded'], keep: ['deleted'] },
  /** An attempt failed and another is scheduled. A video that is transcoded stays transcoded. */
  retry: { to: 'queued', from: ['uploaded', 'queued', 'transcoding', 'failed'], keep: ['transcoded', 'deleted'] },
  /** The last attempt failed (the job is dead-lettered). A video that is transcoded stays transcoded. */
  fail: { to: 'failed', from: ['uploaded', 'queued', 'transcoding', 'failed'], keep: ['transcoded', 'deleted'] },
  /** The video is disposed of: its tombstone replaces it, from whatever status it had. */
  dispose: { to: 'deleted', from: ['uploaded', 'queued', 'transcoding', 'transcoded', 'failed'], keep: ['deleted'] },
} as const satisfies Record<string, Move>;

export type MoveName = keyof typeof MOVES;

export class IllegalTransitionError extends ConflictError {
  constructor(videoId: string, move: MoveName, from: VideoStatus) {
    super(`video ${videoId} cannot ${move} from status ${from}`, 'illegal_transition');
  }
}

/** What a move does to a video in `from`: move it, keep it as it is, or refuse. */
export function outcomeOf(move: MoveName, from: VideoStatus): 'move' | 'keep' | 'illegal' {
  const m: Move = MOVES[move];
  if (m.from.includes(from)) return 'move';
  return m.keep.includes(from) ? 'keep' : 'illegal';
}

export interface Transition {
  meta: VideoMeta;
  /** false when the video was kept in its status (see MOVES[move].keep). */
  moved: boolean;
}

/**
 * Apply `move` under the store's lock. A kept video is still written back unchanged, so the
 * store's listeners (the PostgreSQL mirror, caches) hear of it as they did before this module.
 * `event`: the webhook event a real move records in the outbox, fsynced before meta.json is
 * written (shared/webhooks/events.ts), so no crash separates the change from its event.
 */
async function transition(store: MediaStore, videoId: string, move: MoveName, change: (meta: VideoMeta) => VideoMeta | Promise<VideoMeta>, event: EventType | null = null): Promise<Transition> {
  let moved = false;
  const meta = await store.update(videoId, async (current) => {
    const outcome = outcomeOf(move, current.status);
    if (outcome === 'illegal') throw new IllegalTransitionError(videoId, move, current.status);
    if (outcome === 'keep') return current;
    const next: VideoMeta = { ...(await change(current)), status: MOVES[move].to };
    if (event) await recordEvent(store.videoDir, eventFor(event, current, next));
    moved = true;
    return next;
  });
  return { meta, moved };
}

function withoutFailure(meta: VideoMeta): VideoMeta {
  const { failureReason: _old, ...rest } = meta;
  return rest;
}

/** Finalize: the first transcode job is queued. */
export function markQueued(store: MediaStore, videoId: string): Promise<Transition> {
  return transition(store, videoId, 'queue', (m) => m, 'video.finalized');
}

/** A new transcode job for a video that has none (requeue); clears a previous failure. */
export function markRequeued(store: MediaStore, videoId: string): Promise<Transition> {
  return transition(store, videoId, 'requeue', (m) => ({ ...withoutFailure(m), progress: 0 }));
}

export function markTranscoding(store: MediaStore, videoId: string, attempt: number): Promise<Transition> {
  // A preview of an earlier transcode is not this one's.
  return transition(store, videoId, 'start', ({ preview: _old, ...m }) => ({ ...m, progress: 0, transcodeAttempt: attempt, transcodeStartedAt: new Date().toISOString() }));
}

/** 0–100 while transcoding; never lowered (the chunks of a fanned-out video report out of order). markTranscoding starts it at 0. */
export function markProgress(store: MediaStore, videoId: string, progress: number): Promise<Transition> {
  return transition(store, videoId, 'progress', (m) => ({ ...m, progress: Math.max(m.progress ?? 0, progress) }));
}

/** A fanned-out video's preview is published (only news while transcoding, as progress). */
export function markPreviewReady(store: MediaStore, videoId: string, preview: NonNullable<VideoMeta['preview']>): Promise<Transition> {
  return transition(store, videoId, 'progress', (m) => ({ ...m, preview }), 'video.preview_ready');
}

export interface TranscodedOutputs {
  ladder: RenditionRung[];
  codecs: VideoCodecFamily[];
  outputs: VideoOutputs;
}

export function markTranscoded(store: MediaStore, videoId: string, done: TranscodedOutputs): Promise<Transition> {
  return transition(store, videoId, 'complete', (m) => ({
    ...withoutFailure(m),
    progress: 100,
    renditions: done.ladder.map((r) => r.name),
    ladder: done.ladder,
    codecs: done.codecs,
    transcodedAt: new Date().toISOString(),
    outputs: done.outputs,
  }), 'video.ready');
}

/** An attempt failed and the connector scheduled another. */
export function markRetrying(store: MediaStore, videoId: string, failureReason: string): Promise<Transition> {
  return transition(store, videoId, 'retry', (m) => ({ ...m, failureReason, progress: 0 }));
}

/** The last attempt failed. */
export function markFailed(store: MediaStore, videoId: string, failureReason: string): Promise<Transition> {
  return transition(store, videoId, 'fail', (m) => ({ ...m, failureReason, progress: 0 }), 'video.failed');
}

/**
 * The video becomes its tombstone: everything that may be PHI (filename, user metadata) and every
 * pointer to an output goes; the original's checksum and size stay as the proof of what is destroyed.
 * `commit` runs under the lock first, on the current meta.json (shared/lifecycle/dispose.ts: the hold
 * check, the durable audit entry, the deleted mark); if it throws, nothing is written.
 */
export function markDeleted(store: MediaStore, videoId: string, deletion: Omit<Deletion, 'disposedAt'>, commit: (current: VideoMeta) => Promise<void>): Promise<Transition> {
  return transition(store, videoId, 'dispose', async (m) => {
    await commit(m);
    const { failureReason: _f, progress: _p, outputs: _o, preview: _v, ladder: _l, codecs: _c, transcodeAttempt: _a, transcodeStartedAt: _s, transcodedAt: _t, legalHold: _h, sealed: _phi, ...kept } = m;
    return { ...kept, filename: '', metadata: {}, renditions: [], deletion: { ...deletion, disposedAt: null } };
  }, 'video.deleted');
}
