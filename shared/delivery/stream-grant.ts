/**
 * The media edge's grant (shared/delivery/edge.ts): nginx asks once whether a token
 * may have a whole rendition directory, and caches the answer for the token's life.
 * Granted: 200 with `X-Accel-Expires`, audited. Refused: 403, not audited — nginx
 * then sends the whole request to the stream function, which decides and audits it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AccessAttempt, AccessAudit } from './access-audit.js';
import { grantSecondsFor } from './edge.js';
import { parseGrantUnit, type MediaUrl } from './media-path.js';
import type { TokenCodec } from './tokens.js';
import { isEncryptedOriginal } from '../crypto/original-response.js';
import { refuseIfDeleted } from '../lifecycle/tombstone.js';
import { ForbiddenError } from '../platform/errors.js';
import { counter } from '../platform/metrics.js';

export interface GrantDeps {
  videoDir: string;
  tokens: TokenCodec;
  access: AccessAudit;
}

const edgeGrants = counter({ name: 'pulsevault_stream_edge_grants_total', help: 'Grants the media edge asked for, by outcome (a refusal is then decided, and audited, per request).', labelNames: ['outcome'] as const });

export async function answerGrant(d: GrantDeps, req: IncomingMessage, res: ServerResponse, url: MediaUrl, attempt: AccessAttempt, headers: Record<string, string>): Promise<void> {
  let seconds: number;
  try {
    seconds = grantSecondsFor(req, url, d.tokens);
    // Refused here, the whole request comes to the function, which answers it 410.
    await refuseIfDeleted(d.videoDir, url.videoId);
    // nginx would send ciphertext: the function decrypts these itself.
    if (await isEncryptedOriginal(d.videoDir, url.videoId, parseGrantUnit(url.rest))) throw new Error('encrypted');
  } catch {
    edgeGrants.inc({ outcome: 'refused' });
    // Not audited here: nginx now sends the whole request, which is decided and audited as usual.
    throw new ForbiddenError('the edge sends this request to be decided on its own', 'edge_grant_refused');
  }
  await d.access.granted(attempt);
  edgeGrants.inc({ outcome: 'granted' });
  res.writeHead(200, { ...headers, 'X-Accel-Expires': String(seconds), 'Content-Length': '0' });
  res.end();
}
