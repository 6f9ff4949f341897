/**
 * Upload ids: random UUIDs (v4), named by the server, never by the client. The
 * same id names the tus upload, its lock and its finalize journal.
 */
import { randomUUID } from 'node:crypto';

const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function newUploadId(): string {
  return randomUUID();
}

export function isUploadId(id: string): boolean {
  return UPLOAD_ID_RE.test(id);
}
