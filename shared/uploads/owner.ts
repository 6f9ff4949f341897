/**
 * Who created an upload: the authenticated uploader, stored in the upload's tus
 * metadata by the server at creation (a client-sent value under this key is
 * overwritten), so finalize can refuse someone else's upload.
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
