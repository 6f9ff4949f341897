/**
 * Removes incomplete uploads older than UPLOAD_EXPIRY_HOURS (tus expiration:
 * counted from creation, as the `Upload-Expires` header says), and complete
 * uploads nobody finalized within UPLOAD_EXPIRY_HOURS of their last byte: an
 * abandoned recording must not sit in UPLOAD_DIR for ever (it may be PHI).
 *
 * Every tus-upload replica runs the timer; a Redis lease lets one replica sweep
 * per interval. Each upload is removed only under its upload lock, taken without
 * waiting and without asking anyone to let go: an upload being written right
 * now, or being finalized, is skipped (`busy`) and looked at again next time.
 *
 * (FileStore's own deleteExpired is not used: it reads the offset from the info
 * file, where it is always 0, so it would delete complete uploads too, and it
 * takes no locks.)
 */
import { stat } from 'node:fs/promises';
import type { Upload } from '@tus/server';
import type { Logger } from '../platform/log.js';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';
import { isUploadId } from './ids.js';
import type { RedisLocker } from './locker.js';
import { countUpload } from './metrics.js';
import type { UploadStore } from './store.js';

export const SWEEP_LEASE_KEY = 'pulsevault:uploads:sweep-lease';

export interface SweepResult {
  /** Uploads removed: expired incomplete ones and abandoned complete ones. */
  removed: number;
  /** Of those, complete uploads never finalized. */
  abandoned: number;
  /** Expired but locked (being written or finalized): left for the next sweep. */
  busy: number;
}

/** Why an upload is due for removal, or null while it is not. */
async function dueFor(store: UploadStore, upload: Upload, expiryMs: number, now: number): Promise<'expired' | 'abandoned' | null> {
  const complete = upload.size !== undefined && upload.offset >= upload.size;
  if (!complete) {
    const created = upload.creation_date ? Date.parse(upload.creation_date) : NaN;
    return Number.isFinite(created) && created + expiryMs < now ? 'expired' : null;
  }
  // Finalize's window runs from the last byte written: a 20 GiB upload over a slow link may take most of a day.
  const lastWrite = (await stat(store.dataPath(upload.id)).catch(() => null))?.mtimeMs;
  return lastWrite !== undefined && lastWrite + expiryMs < now ? 'abandoned' : null;
}

export async function sweepExpiredUploads(store: UploadStore, locker: RedisLocker, now = Date.now()): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, abandoned: 0, busy: 0 };
  const expiryMs = store.getExpiration();
  for (const id of (await store.configstore.list?.()) ?? []) {
    if (!isUploadId(id)) continue;
    const before = await store.getUpload(id).catch(() => null); // gone meanwhile, or finalized
    if (!before || !(await dueFor(store, before, expiryMs, now))) continue;
    const lock = locker.newLock(id);
    if (!(await lock.tryLock())) {
      result.busy++;
      continue;
    }
    try {
      // Look again under the lock: a PATCH may have completed it, or a finalize taken it, just before.
      const upload = await store.getUpload(id).catch(() => null);
      const due = upload && (await dueFor(store, upload, expiryMs, now));
      if (due) {
        await store.remove(id);
        result.removed++;
        if (due === 'abandoned') result.abandoned++;
        countUpload(due);
      }
    } finally {
      await lock.unlock();
    }
  }
  return result;
}

/** Run the sweep every `intervalMs` (with jitter) on this replica; returns the stop function. */
export function startExpirySweep(o: { store: UploadStore; locker: RedisLocker; redis: Redis; intervalMs: number; log: Logger }): () => void {
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const tick = async () => {
    try {
      // Never released: holding it for the whole interval is what keeps other replicas from sweeping again.
      if (!(await new RedisLease(o.redis, SWEEP_LEASE_KEY, { ttlMs: o.intervalMs }).tryAcquire())) return; // another replica swept in this interval
      const result = await sweepExpiredUploads(o.store, o.locker);
      o.log[result.removed || result.busy ? 'info' : 'debug'](result, 'expiry sweep done');
    } catch (err) {
      o.log.warn({ err }, 'expiry sweep failed; next interval retries');
    } finally {
      if (!stopped) schedule();
    }
  };
  const schedule = () => {
    // Jitter keeps replicas started together from racing for the lease every time.
    timer = setTimeout(() => void tick(), o.intervalMs * (0.75 + Math.random() * 0.5));
    timer.unref();
  };
  schedule();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
