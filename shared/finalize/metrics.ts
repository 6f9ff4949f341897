/** Finalize duration and outcome (pulsevault_uploads_total{outcome=finalized|replayed|rejected|failed}). */
import { AppError } from '../platform/errors.js';
import { histogram } from '../platform/metrics.js';
import { countUpload } from '../uploads/metrics.js';

const duration = () =>
  histogram({
    name: 'pulsevault_finalize_duration_seconds',
    help: 'Duration of finalize requests (probe, move, sha256, meta.json, audit, enqueue) by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
  });

/** Run one finalize request, timing it and counting its outcome; client errors count as rejected. */
export async function measureFinalize<T extends { replayed: boolean }>(work: () => Promise<T>): Promise<T> {
  const stop = duration().startTimer();
  try {
    const result = await work();
    const outcome = result.replayed ? 'replayed' : 'finalized';
    countUpload(outcome);
    stop({ outcome });
    return result;
  } catch (err) {
    const outcome = err instanceof AppError && err.status < 500 ? 'rejected' : 'failed';
    countUpload(outcome);
    stop({ outcome });
    throw err;
  }
}
