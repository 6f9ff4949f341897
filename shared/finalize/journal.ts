/**
 * The finalize journal: one small file per upload, `VIDEO_DIR/.finalize/<uploadId>.json`,
 * written atomically before anything moves. It makes finalize idempotent (a retry,
 * from any replica, finds the videoId already chosen) and restartable (a crash at
 * any point is finished from the journal's state by the next request or by the
 * recovery pass at start-up).
 *
 * The journal is on the media volume next to the videos: only what is needed to
 * finish is kept, and `pending` (filename, metadata: possible PHI) is dropped
 * once meta.json holds it. Done entries are kept for UPLOAD_EXPIRY_HOURS so late
 * retries still get their videoId.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../platform/atomic-file.js';
import type { ProbeResult } from '../video/probe.js';
import { isUploadId } from '../uploads/ids.js';

/**
 * intent → (move, hash, meta.json, audit, publish) → audited → enqueue → done.
 * `published` (published, not yet audited) is only found in journals of older versions.
 */
export type JournalState = 'intent' | 'published' | 'audited' | 'done' | 'failed';

/** A step that fails this many times in a row (transient 503/507 answers aside) parks its entry as `failed`. */
export const MAX_STEP_FAILURES = 3;

export interface Caller {
  userId: string;
  role: string | null;
}

export interface JournalEntry {
  uploadId: string;
  videoId: string;
  state: JournalState;
  createdAt: string;
  updatedAt: string;
  owner: Caller;
  /** Stored original's extension, from the probe. */
  extension: string;
  requestId: string;
  traceparent: string | null;
  /** What meta.json needs; removed once the video is published. */
  pending?: { filename: string; metadata: Record<string, unknown>; probe: ProbeResult };
  /** Consecutive failed attempts at the current step, and the last error's code (never its message). */
  failures?: number;
  lastError?: string;
  /** Set with state `failed`: the step an operator's `pulsevault finalize retry` resumes at. */
  failedStep?: JournalState;
}

export class FinalizeJournal {
  constructor(readonly dir: string) {}

  /** The journal of the videos in `videoDir` (`VIDEO_DIR/.finalize`): the finalize function's and the CLI's. */
  static of(videoDir: string): FinalizeJournal {
    return new FinalizeJournal(path.join(videoDir, '.finalize'));
  }

  private file(uploadId: string): string {
    return path.join(this.dir, `${uploadId}.json`);
  }

  async read(uploadId: string): Promise<JournalEntry | null> {
    try {
      return JSON.parse(await readFile(this.file(uploadId), 'utf8')) as JournalEntry;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async write(entry: JournalEntry): Promise<JournalEntry> {
    const stamped = { ...entry, updatedAt: new Date().toISOString() };
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.file(entry.uploadId), `${JSON.stringify(stamped)}\n`, `.${entry.uploadId}.${process.pid}.tmp`);
    return stamped;
  }

  /**
   * Count a failed attempt at the entry's current step; the MAX_STEP_FAILURES-th parks it
   * as `failed`, which recovery skips and finalize answers with 500 `finalize_failed`.
   */
  async recordFailure(uploadId: string, errorCode: string): Promise<JournalEntry | null> {
    const entry = await this.read(uploadId);
    if (!entry || entry.state === 'failed' || entry.state === 'done') return entry;
    const failures = (entry.failures ?? 0) + 1;
    const parked = failures >= MAX_STEP_FAILURES ? { state: 'failed' as const, failedStep: entry.state } : {};
    return this.write({ ...entry, failures, lastError: errorCode, ...parked });
  }

  /** An operator fixed the cause: put a `failed` entry back at its step, so the next finalize or recovery pass resumes it. */
  async resume(uploadId: string): Promise<JournalEntry | null> {
    const entry = await this.read(uploadId);
    if (!entry || entry.state !== 'failed' || !entry.failedStep) return null;
    const { failedStep, failures: _f, ...rest } = entry;
    return this.write({ ...rest, state: failedStep });
  }

  async remove(uploadId: string): Promise<void> {
    await rm(this.file(uploadId), { force: true });
  }

  /** Upload ids with a journal entry. */
  async uploadIds(): Promise<string[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).filter(isUploadId);
  }
}
