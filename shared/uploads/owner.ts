/**
 * Who created an upload: the authenticated uploader, stored in the upload's tus
 * info file under a metadata key by the server at creation (a client-sent value
 * under this key is overwritten), so finalize can refuse someone else's upload.
 * It never leaves the server: the store hides it from tus (HEAD), see withoutOwner.
 */
import type { IncomingMessage } from 'node:http';
import type { Principal } from '../auth/jwt.js';

export const UPLOAD_OWNER_KEY = 'pulsevaultOwner';

/** The authenticated creator of each in-flight creation request, for the tus hook. */
const creators = new WeakMap<IncomingMessage, string | null>();

export function rememberCreator(req: IncomingMessage, principal: Principal): void {
  creators.set(req, principal.userId);
}

/**
 * The metadata a new upload is stored with: the client's, with the owner key
 * set to the authenticated creator (or removed when there is none).
 */
export function withOwner(nodeReq: IncomingMessage | undefined, metadata: Record<string, string | null> | undefined): Record<string, string | null> {
  const { [UPLOAD_OWNER_KEY]: _claimed, ...rest } = metadata ?? {};
  const owner = nodeReq ? creators.get(nodeReq) : undefined;
  return owner ? { ...rest, [UPLOAD_OWNER_KEY]: owner } : rest;
}

/** The upload as the client created it: metadata without the owner key (none at all when nothing else was sent). */
export function withoutOwner<T extends { metadata?: Record<string, string | null> | undefined }>(upload: T): T {
  if (!upload.metadata || !(UPLOAD_OWNER_KEY in upload.metadata)) return upload;
  const { [UPLOAD_OWNER_KEY]: _owner, ...rest } = upload.metadata;
  return Object.assign(Object.create(Object.getPrototypeOf(upload) as object) as T, upload, { metadata: Object.keys(rest).length > 0 ? rest : undefined });
}
