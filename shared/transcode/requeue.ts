/**
 * Re-enqueue transcodes from what the disk says (the source of truth), for
 * `pulsevault requeue` and for the queue connector's recovery after Redis lost
 * its data (shared/transcode/recovery.ts).
 *
 * Streams VIDEO_DIR with fs.opendir, a bounded number of videos at a time, so
 * memory stays flat for 100k videos. Safe to run twice, or on several replicas
 * at once: a video that already has a job waiting, running or scheduled for
 * retry is not enqueued again (enqueueTranscode).
 */
import { opendir } from 'node:fs/promises';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import { NotFoundError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import type { Logger } from '../platform/log.js';
import type { Redis } from '../platform/redis.js';
import { isVideoId, type MediaStore } from '../video/store.js';
import type { VideoStatus } from '../video/state.js';
import { MASTER_NAME } from './playlists.js';
import { enqueueTranscode } from './job.js';
import { hasLiveJob } from './queue.js';
import { OUTPUT_DIR } from './transcoder.js';

const PARALLEL = 8;

/**
 * Which videos get a job:
 * - `untranscoded`: every video not `transcoded`, or whose published ladder is missing (an operator's requeue, e.g. after a restore without hls/);
 * - `waiting`: every video meta.json says waits for a transcode (`queued`, `transcoding`), the jobs a Redis that lost its data no longer has.
 */
export type RequeueSelection = 'untranscoded' | 'waiting';

export interface RequeueOptions {
  select: RequeueSelection;
  /** Count only. */
  dryRun?: boolean;
  /** Audit each job re-created for a video whose status did not change (`transcode.requeued`, with this reason). */
  auditReason?: string;
}

export interface RequeueCounts {
  scanned: number;
  enqueued: number;
  alreadyQueued: number;
  /** Not selected: transcoded and published (`untranscoded`), or not waiting for a transcode (`waiting`). */
  upToDate: number;
  noMeta: number;
  errors: number;
}

export interface RequeueDeps {
  redis: Redis;
  store: MediaStore;
  audit: AuditLog;
  log: Logger;
}

const WAITING: ReadonlySet<VideoStatus> = new Set(['queued', 'transcoding']);

export async function requeueVideos({ redis, store, audit, log }: RequeueDeps, o: RequeueOptions): Promise<RequeueCounts> {
  const counts: RequeueCounts = { scanned: 0, enqueued: 0, alreadyQueued: 0, upToDate: 0, noMeta: 0, errors: 0 };

  const visit = async (videoId: string) => {
    counts.scanned++;
    try {
      const meta = await store.read(videoId);
      const selected = o.select === 'waiting' ? WAITING.has(meta.status) : meta.status !== 'transcoded' || !(await exists(path.join(store.dir(videoId), OUTPUT_DIR, MASTER_NAME)));
      if (!selected || meta.status === 'deleted') return void counts.upToDate++;
      if (o.dryRun) return void counts.enqueued++;
      // enqueueTranscode audits a status change; a waiting video keeps its status, so say why its job is back —
      // before adding it: a job is never re-created unaudited (a failed audit leaves the video to the next pass).
      if (o.auditReason && WAITING.has(meta.status)) {
        if (await hasLiveJob(redis, videoId)) return void counts.alreadyQueued++;
        await audit.record({ category: 'transcode', action: 'transcode.requeued', outcome: 'success', reason: o.auditReason, videoId });
      }
      const { enqueued } = await enqueueTranscode(redis, videoId, null, { store, audit });
      counts[enqueued ? 'enqueued' : 'alreadyQueued']++;
    } catch (err) {
      // A directory without meta.json is an interrupted finalize, not ours to queue.
      if (err instanceof NotFoundError) return void counts.noMeta++;
      counts.errors++;
      log.warn({ videoId, err: (err as Error).message }, 'cannot requeue');
    }
  };

  const running = new Set<Promise<void>>();
  for await (const entry of await opendir(store.videoDir)) {
    if (!entry.isDirectory() || !isVideoId(entry.name)) continue;
    const p = visit(entry.name).finally(() => running.delete(p));
    running.add(p);
    if (running.size >= PARALLEL) await Promise.race(running);
  }
  await Promise.all(running);
  return counts;
}
