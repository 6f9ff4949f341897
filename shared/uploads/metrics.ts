/** Upload metrics, shared by tus-upload (created … abandoned) and finalize (finalized, rejected, failed). */
import { counter } from '../platform/metrics.js';

export type UploadOutcome = 'created' | 'completed' | 'terminated' | 'expired' | 'abandoned' | 'finalized' | 'replayed' | 'rejected' | 'failed';

export function uploadsTotal() {
  return counter({
    name: 'pulsevault_uploads_total',
    help: 'Uploads by outcome: tus created/completed/terminated/expired, abandoned (complete, never finalized), then finalized/replayed/rejected/failed.',
    labelNames: ['outcome'] as const,
  });
}

export function countUpload(outcome: UploadOutcome): void {
  uploadsTotal().inc({ outcome });
}

export function uploadBytesTotal() {
  return counter({ name: 'pulsevault_upload_bytes_total', help: 'Bytes of upload data stored by tus PATCH (and creation-with-upload) requests.' });
}
