/**
 * Retention: a video is kept until its `retainUntil` (finalize stamps it from RETENTION_DAYS; an
 * admin's PATCH may change it; null = kept until deleted). `runRetention` disposes of the expired,
 * unheld videos through the same path as DELETE (./dispose.ts, reason `retention_expired`), one at
 * a time at a bounded rate, after finishing any disposal a crash left half-done.
 */
import { readdir } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { Config } from '../platform/config.js';
import { AppError, NotFoundError } from '../platform/errors.js';
import { isVideoId, type MediaStore } from '../video/store.js';
import { disposeVideo, sweepDisposals, type LifecycleDeps } from './dispose.js';

/** retainUntil of a video uploaded at `uploadedAt` under the site default, or null when retention is off. */
export function defaultRetainUntil(config: Pick<Config, 'retentionDays'>, uploadedAt: string): string | null {
  if (config.retentionDays <= 0) return null;
  return new Date(Date.parse(uploadedAt) + config.retentionDays * 86_400_000).toISOString();
}

export interface PastRetention {
  videoId: string;
  retainUntil: string;
  held: boolean;
}

/** Videos not deleted whose retainUntil has passed. */
export async function pastRetention(store: MediaStore, now = new Date()): Promise<PastRetention[]> {
  const found: PastRetention[] = [];
  for (const name of await readdir(store.videoDir).catch(() => [] as string[])) {
    if (!isVideoId(name)) continue;
    const meta = await store.read(name).catch(() => null);
    if (!meta || meta.status === 'deleted' || !meta.retainUntil || Date.parse(meta.retainUntil) > now.getTime()) continue;
    found.push({ videoId: name, retainUntil: meta.retainUntil, held: Boolean(meta.legalHold) });
  }
  return found.sort((a, b) => a.retainUntil.localeCompare(b.retainUntil));
}

export type RetentionOutcome = { videoId: string; action: 'disposed' | 'would_dispose' | 'held' | 'failed'; reason?: string };

export interface RetentionOptions {
  dryRun: boolean;
  /** At most this many disposals a second (each removes a whole video's files). */
  perSecond: number;
  onOutcome?: (outcome: RetentionOutcome) => void;
  now?: Date;
}

export async function runRetention(deps: LifecycleDeps, o: RetentionOptions): Promise<{ sweep: { finished: number; errors: number } | null; outcomes: RetentionOutcome[] }> {
  const sweep = o.dryRun ? null : await sweepDisposals(deps);
  const outcomes: RetentionOutcome[] = [];
  const report = (outcome: RetentionOutcome) => {
    outcomes.push(outcome);
    o.onOutcome?.(outcome);
  };
  const gapMs = 1000 / o.perSecond;
  for (const video of await pastRetention(deps.store, o.now)) {
    if (video.held) {
      report({ videoId: video.videoId, action: 'held' });
      continue;
    }
    if (o.dryRun) {
      report({ videoId: video.videoId, action: 'would_dispose' });
      continue;
    }
    const started = Date.now();
    try {
      await disposeVideo(deps, video.videoId, 'retention_expired', { actor: null, requestId: null, clientIp: null }, o.now ?? new Date());
      report({ videoId: video.videoId, action: 'disposed' });
    } catch (err) {
      if (err instanceof NotFoundError) continue;
      report({ videoId: video.videoId, action: 'failed', reason: err instanceof AppError ? err.code : 'internal' });
    }
    const wait = gapMs - (Date.now() - started);
    if (wait > 0) await delay(wait);
  }
  return { sweep, outcomes };
}
