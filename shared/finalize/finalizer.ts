/**
 * Finalize: turn a complete tus upload into a video, exactly once.
 *
 *   lock upload → journal? (retry or crash: finish it) → complete? → probe →
 *   journal intent (videoId chosen) → move into VIDEO_DIR/.staging/<videoId>/original.<ext>
 *   (with the vault's keys: data key made, then encrypted into it while hashing, see shared/crypto/)
 *   → sha256 → meta.json → audit (durable) → rename the staging dir to VIDEO_DIR/<videoId>
 *   (atomic publish) → drop the tus info file → journal audited → enqueue transcode → status
 *   queued → journal done
 *
 * - One Redis lock per upload (the same lock tus PATCH/DELETE and the expiry sweep
 *   take), so two finalize calls on two replicas serialise and the second one
 *   finds the journal: same videoId, no second video.
 * - Every step after the intent is redone safely from the journal and what is on
 *   disk, so a crash anywhere is finished by the next call or by `recoverPending()`
 *   (run at start-up and every minute). If the upload vanished before anything
 *   was moved (terminated after a crash), the intent is rolled back.
 * - Readers only ever see VIDEO_DIR/<uuid> directories that already hold the
 *   original and a valid meta.json.
 * - A video is never visible without its upload audit entry: the entry is recorded before the
 *   publishing rename. Audit and enqueue are at-least-once: a crash right after either repeats it.
 */
import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import { defaultRetainUntil } from '../lifecycle/retention.js';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import { fsyncDir, writeFileAtomic } from '../platform/atomic-file.js';
import { ORIGINAL_ENCRYPTED_MARK } from '../crypto/original-response.js';
import type { Config } from '../platform/config.js';
import { AppError, ConflictError, NotFoundError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import { newId } from '../platform/ids.js';
import type { Logger } from '../platform/log.js';
import { gauge } from '../platform/metrics.js';
import { MediaStore, type VideoMeta } from '../video/store.js';
import { encryptFile, plaintextChecksum } from '../crypto/chunked.js';
import { deriveKey } from '../keys/video-keys.js';
import { probe } from '../video/probe.js';
import type { VideoStatus } from '../video/state.js';
import type { Redis } from '../platform/redis.js';
import { enqueueFirstTranscode } from '../transcode/job.js';
import type { RedisLocker } from '../uploads/locker.js';
import type { UploadStore } from '../uploads/store.js';
import { moveFile } from './files.js';
import { FinalizeJournal, type Caller, type JournalEntry } from './journal.js';
import type { FinalizeRequest } from './request.js';

export interface FinalizeResponse {
  videoId: string;
  /** The upload's: finalized into a video. */
  status: 'uploaded';
  size: number;
  checksum: string;
  /**
   * The video's transcode state, in the video status words (shared/video/state.ts): `queued` on the call that
   * queued it, what it has become on a replay (`transcoded`, …); `disabled` when no transcode was queued.
   */
  transcoding: Exclude<VideoStatus, 'uploaded'> | 'disabled';
  /** The stored original's path in the video dir (`original.mov`, …), to sign; beyond the spec's fields. */
  original: string;
}

export interface FinalizeContext {
  requestId: string;
  traceparent: string | null;
  clientIp: string | null;
  /** Admins may finalize any upload; others only uploads they created (UPLOAD_OWNER_KEY). */
  callerIsAdmin: boolean;
}

/** How long a finalize waits for the upload's lock (a last PATCH, another finalize) before 409. */
const LOCK_WAIT_MS = 10_000;

/** The upload is gone and nothing was moved: the intent can only be rolled back. */
class UploadVanishedError extends Error {}

/** The journal entry is parked as `failed`: only an operator can move it on (docs/operations.md). */
class FinalizeFailedError extends AppError {
  constructor() {
    super(500, 'finalize_failed', 'finalizing this upload failed repeatedly; an operator must resolve it (pulsevault finalize)');
  }
}

const failedFinalizes = gauge({
  name: 'pulsevault_finalize_failed_journals',
  help: 'Finalize journal entries parked as failed after repeated errors: each needs an operator (pulsevault finalize).',
});

class UploadBusyError extends ConflictError {
  constructor() {
    super('this upload is busy (being written or finalized); retry', 'upload_busy');
  }
}

/** Points right after each durable step, in order: where a crash leaves something for recovery to finish. */
export const FINALIZE_STEPS = ['after-intent', 'after-move', 'after-meta', 'after-audit', 'after-publish', 'after-enqueue'] as const;
export type FinalizeStep = (typeof FINALIZE_STEPS)[number];

export interface FinalizerDeps {
  config: Config;
  redis: Redis;
  uploads: UploadStore;
  locker: RedisLocker;
  videos: MediaStore;
  audit: AuditLog;
  log: Logger;
  /** Told as each step becomes durable; the crash tests kill the process here. Production observes nothing. */
  onStep?: (step: FinalizeStep) => void;
}

export class Finalizer {
  readonly journal: FinalizeJournal;
  private readonly staging: MediaStore;

  constructor(private readonly d: FinalizerDeps) {
    this.journal = FinalizeJournal.of(d.config.videoDir);
    // Same filesystem as VIDEO_DIR, so publishing is one rename; not a UUID, so no reader lists it.
    this.staging = new MediaStore(path.join(d.config.videoDir, '.staging'), null, d.videos.keys);
  }

  async finalize(request: FinalizeRequest, caller: Caller, ctx: FinalizeContext): Promise<{ response: FinalizeResponse; replayed: boolean }> {
    try {
      return await this.withUploadLock(request.uploadId, LOCK_WAIT_MS, async (signal) => {
        const existing = await this.journal.read(request.uploadId);
        if (existing) {
          // Someone else's finished upload is, for this caller, no upload at all.
          if (existing.owner.userId !== caller.userId) throw new NotFoundError('no such upload');
          return { response: responseOf(await this.resumeJournaled(existing, signal, ctx.clientIp), true), replayed: true };
        }
        const entry = await this.begin(request, caller, ctx);
        this.d.onStep?.('after-intent');
        return { response: responseOf(await this.resumeJournaled(entry, signal, ctx.clientIp), false), replayed: false };
      });
    } catch (caught) {
      const err = asStorageFull(caught);
      await this.auditRefusal(err, request.uploadId, caller, ctx);
      throw err;
    }
  }

  /**
   * Finish (or roll back) every journal entry left unfinished by a crash; prune old done entries.
   * `failed` entries wait for an operator (counted, not retried).
   */
  async recoverPending(): Promise<{ finished: number; rolledBack: number; busy: number; failed: number }> {
    const counts = { finished: 0, rolledBack: 0, busy: 0, failed: 0 };
    const keepDoneMs = this.d.config.uploadExpiryHours * 3_600_000;
    for (const uploadId of await this.journal.uploadIds()) {
      const acquired = await this.withUploadLock(uploadId, 0, async (signal) => {
        const entry = await this.journal.read(uploadId);
        if (!entry) return;
        if (entry.state === 'done') {
          if (Date.now() - Date.parse(entry.updatedAt) > keepDoneMs) await this.journal.remove(uploadId);
          return;
        }
        if (entry.state === 'failed') return void counts.failed++;
        try {
          await this.resumeJournaled(entry, signal, null);
          counts.finished++;
          this.d.log.info({ uploadId, videoId: entry.videoId }, 'recovered an interrupted finalize');
        } catch (err) {
          if (!(err instanceof UploadVanishedError)) throw err;
          await this.journal.remove(uploadId);
          counts.rolledBack++;
          this.d.log.warn({ uploadId, videoId: entry.videoId }, 'rolled back an interrupted finalize: the upload is gone');
        }
      }).then(
        () => true,
        (err: unknown) => {
          if (err instanceof UploadBusyError) return false;
          if (err instanceof FinalizeFailedError) {
            counts.failed++; // parked just now, after its last allowed attempt (logged by resumeJournaled)
            return true;
          }
          this.d.log.error({ err, uploadId }, 'recovery of a finalize failed; will retry');
          return true;
        },
      );
      if (!acquired) counts.busy++;
    }
    failedFinalizes.set(counts.failed);
    return counts;
  }

  /**
   * Drive a journaled entry on, counting persistent failures: a step that keeps failing (a bug, a
   * poison value from an older version's journal) ends `failed` instead of failing every minute for ever.
   */
  private async resumeJournaled(entry: JournalEntry, signal: AbortSignal, clientIp: string | null): Promise<VideoMeta> {
    if (entry.state === 'failed') throw new FinalizeFailedError();
    try {
      return await this.complete(entry, signal, clientIp);
    } catch (err) {
      if (err instanceof UploadVanishedError || (err instanceof AppError && err.status === 503)) throw err;
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw err; // transient: mapped to 507 by finalize()
      const code = errorCode(err);
      const recorded = await this.journal.recordFailure(entry.uploadId, code);
      this.d.log.error({ uploadId: entry.uploadId, videoId: entry.videoId, step: recorded?.failedStep ?? recorded?.state, failures: recorded?.failures, error: code }, 'a finalize step failed');
      throw recorded?.state === 'failed' ? new FinalizeFailedError() : err;
    }
  }

  private async withUploadLock<T>(uploadId: string, waitMs: number, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const lost = new AbortController();
    const lock = this.d.locker.newLock(uploadId);
    // Waits politely (no release request): an upload's last PATCH is allowed to finish.
    const ok = await lock.acquire({ timeoutMs: waitMs, askRelease: false, onLost: () => lost.abort() });
    if (!ok) throw new UploadBusyError();
    try {
      return await work(lost.signal);
    } finally {
      await lock.unlock();
    }
  }

  /** Check the upload and probe it, then record the intent (the videoId is chosen here, once). */
  private async begin(request: FinalizeRequest, caller: Caller, ctx: FinalizeContext): Promise<JournalEntry> {
    const { upload, owner: uploader } = await this.d.uploads.getOwnedUpload(request.uploadId).catch((err: unknown) => {
      if (isTusStatus(err, 404) || isTusStatus(err, 410)) throw new NotFoundError('no such upload');
      throw err;
    });
    // Someone else's upload is, for this caller, no upload at all.
    if (uploader && uploader !== caller.userId && !ctx.callerIsAdmin) throw new NotFoundError('no such upload');
    if (upload.size === undefined || upload.offset < upload.size) {
      throw new ConflictError(`upload is not complete (${upload.offset} of ${upload.size ?? 'unknown'} bytes)`, 'upload_incomplete');
    }
    const probed = await probe(this.d.uploads.dataPath(request.uploadId)); // 422: nothing moved, upload kept
    const now = new Date().toISOString();
    return this.journal.write({
      uploadId: request.uploadId,
      videoId: newId(),
      state: 'intent',
      createdAt: now,
      updatedAt: now,
      owner: caller,
      extension: probed.extension,
      requestId: ctx.requestId,
      traceparent: ctx.traceparent,
      pending: { filename: request.filename, metadata: request.metadata, probe: probed },
    });
  }

  /** Drive a journal entry to `done`; every step is safe to repeat. */
  private async complete(entry: JournalEntry, signal: AbortSignal, clientIp: string | null): Promise<VideoMeta> {
    const step = async (next: JournalEntry['state'], change: Partial<JournalEntry> = {}) => {
      if (signal.aborted) throw new AppError(503, 'lock_lost', 'lost the upload lock; retry');
      const { failures: _f, lastError: _e, ...progressed } = entry; // a step that succeeds clears the failure count
      entry = await this.journal.write({ ...progressed, ...change, state: next });
    };
    if (entry.state === 'intent') {
      await this.publish(entry, () => this.auditSuccess(entry, clientIp));
      await this.d.uploads.configstore.delete(entry.uploadId).catch(() => undefined); // tus info: now 404
      const { pending: _phi, ...rest } = entry;
      entry = rest;
      await step('audited');
    }
    if (entry.state === 'published') {
      // Journals written before the audit entry became part of the publish step.
      await this.auditSuccess(entry, clientIp);
      await step('audited');
    }
    if (entry.state === 'audited') {
      // Written through the real store (the staging one has no listeners): mirrors and caches hear of
      // the new video here, whether or not it moves to `queued`.
      if (this.d.config.transcode.enabled) {
        await enqueueFirstTranscode(this.d.redis, this.d.videos, entry.videoId, entry.traceparent, () => this.d.onStep?.('after-enqueue'));
      } else {
        await this.d.videos.update(entry.videoId, (m) => m);
      }
      await step('done');
    }
    return this.d.videos.read(entry.videoId);
  }

  /** The upload entry is durable before the video is visible: a published video always has its upload entry. */
  private async auditSuccess(entry: JournalEntry, clientIp: string | null): Promise<void> {
    await this.d.audit.record({
      category: 'upload',
      action: 'finalize',
      outcome: 'success',
      actor: entry.owner,
      videoId: entry.videoId,
      clientIp,
      requestId: entry.requestId,
    });
    this.d.onStep?.('after-audit');
  }

  /**
   * Move, hash, write meta.json in the staging dir, record the upload's audit entry, then publish with
   * one rename. When the entry cannot be recorded (503) nothing is visible and a retry resumes here.
   */
  private async publish(entry: JournalEntry, audit: () => Promise<void>): Promise<void> {
    const { videoDir } = this.d.config;
    const finalDir = path.join(videoDir, entry.videoId);
    if (await exists(path.join(finalDir, 'meta.json'))) return; // published before a crash
    const pending = entry.pending;
    if (!pending) throw new Error(`journal of upload ${entry.uploadId} lacks what meta.json needs`);

    const stagingDir = this.staging.dir(entry.videoId);
    const originalName = `original.${entry.extension}`;
    const original = path.join(stagingDir, originalName);
    const source = this.d.uploads.dataPath(entry.uploadId);
    const keys = this.d.videos.keys;
    let hashed: { checksum: string; size: number; encrypted: boolean } | null = null;
    if (!(await exists(original))) {
      if (!(await exists(source))) throw new UploadVanishedError();
      await mkdir(stagingDir, { recursive: true });
      if (keys) {
        // Made (or, after a crash, found) before any ciphertext exists: the original is never without its key.
        const dataKey = await keys.create(entry.videoId);
        // The edge then never asks for a grant of this original (a refusal) before passing each request on.
        await writeFileAtomic(path.join(stagingDir, ORIGINAL_ENCRYPTED_MARK), '');
        const part = `${original}.part`;
        hashed = { ...(await encryptFile(source, part, deriveKey(dataKey, 'original'), entry.videoId)), encrypted: true };
        await rename(part, original);
        await fsyncDir(stagingDir);
        await rm(source); // the plaintext upload goes as soon as its ciphertext is durable
        await fsyncDir(path.dirname(source));
      } else {
        await moveFile(source, original);
        await chmod(original, 0o640); // media is not world-readable (the volume is 750 for uid 1000)
      }
    } else {
      await rm(source, { force: true }); // a copy (or encryption) that completed just before a crash
    }
    this.d.onStep?.('after-move');

    const { checksum, size, encrypted } = hashed ?? (await plaintextChecksum(original, entry.videoId, async () => (keys ? keys.dataKey(entry.videoId) : null)));
    const p = pending.probe;
    const meta: VideoMeta = {
      videoId: entry.videoId,
      filename: pending.filename,
      owner: entry.owner.userId,
      status: 'uploaded',
      uploadedAt: entry.createdAt,
      updatedAt: entry.createdAt,
      original: originalName,
      size,
      checksum,
      duration: p.duration,
      width: p.width,
      height: p.height,
      fps: p.fps,
      videoCodec: p.videoCodec,
      audioCodec: p.audioCodec,
      bitrate: p.bitrate,
      renditions: [],
      metadata: pending.metadata,
      uploadId: entry.uploadId,
      ...(encrypted ? { encrypted } : {}),
    };
    const retainUntil = defaultRetainUntil(this.d.config, entry.createdAt);
    if (retainUntil) meta.retainUntil = retainUntil;
    await this.staging.write(meta); // meta.tmp → fsync → rename → fsync dir
    this.d.onStep?.('after-meta');
    await audit();

    await rename(stagingDir, finalDir);
    await fsyncDir(videoDir);
    await fsyncDir(path.dirname(stagingDir));
    this.d.onStep?.('after-publish');
  }

  private async auditRefusal(err: unknown, uploadId: string, caller: Caller, ctx: FinalizeContext): Promise<void> {
    const reason = err instanceof AppError ? err.code : 'internal';
    await this.d.audit
      .record({ category: 'upload', action: 'finalize', outcome: 'failure', reason, actor: caller, videoId: null, clientIp: ctx.clientIp, requestId: ctx.requestId })
      .catch((auditErr: unknown) => this.d.log.warn({ err: auditErr, uploadId }, 'could not audit a refused finalize'));
  }
}

/**
 * The answer: the spec's `transcoding: queued` for the call that queued the job (the transcoder may
 * already have taken it); a replay says what the video has become since.
 */
function responseOf(meta: VideoMeta, replay: boolean): FinalizeResponse {
  // Still `uploaded` after complete() only when no transcode was queued (transcoding is off).
  const transcoding = meta.status === 'uploaded' ? 'disabled' : replay ? meta.status : 'queued';
  return { videoId: meta.videoId, status: 'uploaded', size: meta.size, checksum: meta.checksum, transcoding, original: meta.original };
}

/**
 * A full media volume is the operator's to fix, not a bug: 507 with a clear message (the
 * upload and anything journaled stay; the retry resumes once there is space).
 */
function asStorageFull(err: unknown): unknown {
  if ((err as NodeJS.ErrnoException | null)?.code !== 'ENOSPC') return err;
  return new AppError(507, 'insufficient_storage', 'the media volume is full; nothing was lost — retry once space is freed');
}

/** What the journal and log keep of an error: its code or class name, never the message (it may name paths). */
function errorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.name : 'unknown';
}

function isTusStatus(err: unknown, status: number): boolean {
  return typeof err === 'object' && err !== null && (err as { status_code?: number }).status_code === status;
}
