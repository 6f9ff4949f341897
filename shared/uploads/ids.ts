/**
 * Upload ids: UUIDs named by the server, never by the client. The same id names
 * the tus upload, its lock and its finalize journal.
 */
import { isUuid, newId } from '../platform/ids.js';

export function newUploadId(): string {
  return newId();
}

export function isUploadId(id: string): boolean {
  return isUuid(id);
}
