/**
 * Removes incomplete uploads older than UPLOAD_EXPIRY_HOURS (tus expiration:
 * counted from creation, as the `Upload-Expires` header says).
 *
 * Every tus-upload replica runs the timer; a Redis lease lets one replica sweep
 * per interval. Each upload is removed only under its upload lock, taken without
 * waiting and without asking anyone to let go: an upload being written right
 * now is skipped (`busy`) and looked at again next time. Complete uploads are
 * never swept: they wait for finalize.
 *
 * (FileStore's own deleteExpired is not used: it reads the offset from the info
 * file, where it is always 0, so it would delete complete uploads too, and it
 * takes no locks.)
 */
import { randomBytes } from 'node:crypto';
import type { Upload } from '@tus/server';
import type { Logger } from '../log.js';
import type { Redis } from '../redis.js';
import { isUploadId } from './ids.js';
import type { RedisLocker } from './locker.js';
import { countUpload } from './metrics.js';
import type { UploadStore } from './store.js';

export const SWEEP_LEASE_KEY = 'pulsevault:uploads:sweep-lease';

export interface SweepResult {
  removed: number;
  /** Expired but locked (being written): left for the next sweep. */
  busy: number;
}

function isExpired(upload: Upload, expiryMs: number, now: number): boolean {
  const incomplete = upload.size === undefined || upload.offset < upload.size;
  const created = upload.creation_date ? Date.parse(upload.creation_date) : NaN;
  return incomplete && Number.isFinite(created) && created + expiryMs < now;
}

export async function sweepExpiredUploads(store: UploadStore, locker: RedisLocker, now = Date.now()): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, busy: 0 };
  const expiryMs = store.getExpiration();
  for (const id of (await store.configstore.list?.()) ?? []) {
    if (!isUploadId(id)) continue;
    const before = await store.getUpload(id).catch(() => null); // gone meanwhile, or being finalized
    if (!before || !isExpired(before, expiryMs, now)) continue;
    const lock = locker.newLock(id);
    if (!(await lock.tryLock())) {
      result.busy++;
      continue;
    }
    try {
      // Look again under the lock: a PATCH may have completed it just before.
      const upload = await store.getUpload(id).catch(() => null);
      if (upload && isExpired(upload, expiryMs, now)) {
        await store.remove(id);
        result.removed++;
        countUpload('expired');
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
      const lease = await o.redis.set(SWEEP_LEASE_KEY, randomBytes(8).toString('hex'), 'PX', o.intervalMs, 'NX');
      if (lease !== 'OK') return; // another replica swept in this interval
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
