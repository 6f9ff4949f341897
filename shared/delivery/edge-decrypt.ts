/**
 * Handing an encrypted file (an original, a sealed image: shared/crypto/chunked.ts) to the media
 * edge to decrypt and send (services/media-edge/decrypt-module/), when the edge says it can
 * (`X-Media-Edge-Decrypts`, believed only with the edge's key: ./edge.ts).
 *
 * The function still decides everything (token, scope, audit, status, range); it answers with
 * X-Accel-Redirect to `/_pulsevault_edge/decrypt/<videoId>/<path>` and a grant in
 * `X-Media-Edge-Decrypt`: the planned status and range, the video id (the chunks' AAD) and the
 * file's key, sealed with AES-256-GCM under a key derived from the edge's key, the redirect URI
 * as AAD. So the file key is never in the clear on the network or in a log line (nginx's debug
 * log prints upstream headers), and a grant opens only for the path it names. nginx never passes
 * the header on to a client (`proxy_hide_header`).
 */
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { EDGE_DECRYPTS_HEADER, EDGE_INTERNAL_PREFIX, viaEdge } from './edge.js';

/** Response header of the function: the sealed grant (the module's first argument reads it). */
export const EDGE_DECRYPT_GRANT_HEADER = 'X-Media-Edge-Decrypt';
/** The internal location the module answers. */
export const EDGE_DECRYPT_PREFIX = `${EDGE_INTERNAL_PREFIX}decrypt/`;
/** Domain separation of the grant key from every other use of the edge's key; the module holds the same string. */
const GRANT_LABEL = 'pulsevault media-edge decrypt grant v1';

export interface EdgeDecryptGrant {
  status: 200 | 206;
  start: number;
  length: number;
  videoId: string;
  /** The file's own key (derived from the video's data key for its purpose). */
  key: Buffer;
}

/** Whether this request came through an edge that decrypts (its headers were believed: ./edge.ts admitEdgeHeaders). */
export const edgeDecrypts = (req: IncomingMessage): boolean => viaEdge(req) && req.headers[EDGE_DECRYPTS_HEADER] === '1';

export const edgeDecryptRedirect = (videoId: string, relativePath: string): string => `${EDGE_DECRYPT_PREFIX}${videoId}/${relativePath}`;

/** The grant for `uri`, as the module opens it: base64url(nonce ‖ AES-256-GCM(status ‖ start ‖ length ‖ id ‖ key) ‖ tag). */
export function sealEdgeGrant(edgeKey: string, uri: string, grant: EdgeDecryptGrant): string {
  const plain = Buffer.alloc(2 + 8 + 8 + 16 + 32);
  plain.writeUInt16BE(grant.status, 0);
  plain.writeBigUInt64BE(BigInt(grant.start), 2);
  plain.writeBigUInt64BE(BigInt(grant.length), 10);
  Buffer.from(grant.videoId.replaceAll('-', ''), 'hex').copy(plain, 18);
  grant.key.copy(plain, 34);
  const grantKey = createHmac('sha256', edgeKey).update(GRANT_LABEL).digest();
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', grantKey, nonce).setAAD(Buffer.from(uri));
  const sealed = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  plain.fill(0);
  grantKey.fill(0);
  return sealed.toString('base64url');
}
