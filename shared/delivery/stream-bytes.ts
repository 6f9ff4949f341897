/**
 * A media file's bytes to a token's holder, with ranges and validators (planResponse):
 * sent from the open file descriptor, or — behind the media edge — handed to nginx
 * with an X-Accel-Redirect that it sends as planned here. An encrypted original and a
 * sealed image (poster, sprite sheet) are decrypted here (shared/crypto/original-response.ts,
 * shared/crypto/images.ts), or by an edge with its decryption module, which gets the planned
 * range and a sealed grant (shared/delivery/edge-decrypt.ts): nginx alone would send their ciphertext.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EncryptedFile } from '../crypto/chunked.js';
import { sealedImage, sealingInPlace } from '../crypto/images.js';
import { encryptedOriginal, encryptingInPlace, sendEncryptedFile } from '../crypto/original-response.js';
import type { VideoKeys } from '../keys/video-keys.js';
import { edgeRedirect, viaEdge } from './edge.js';
import { edgeDecrypts } from './edge-decrypt.js';
import type { OpenedMedia } from './media-path.js';
import { planResponse, streamFile, validatorsOf } from './media-response.js';
import { RangeNotSatisfiableError } from '../platform/errors.js';
import { counter } from '../platform/metrics.js';

const bytesServed = counter({ name: 'pulsevault_stream_bytes_total', help: 'Media bytes the stream function sent itself (not those the media edge sends; see its access log).' });

export interface BytesDeps {
  videoDir: string;
  keys: VideoKeys | null;
  /** The edge's key (config.mediaEdgeKey): an edge that decrypts gets encrypted files with a grant sealed under it. */
  edgeKey: string | null;
}

/**
 * `headers`: the media headers (Content-Type among them); `fileHeaders`: those an answer about the
 * file carries without a body type (a 416). Closes `opened.handle` once it is done with it.
 */
export async function sendBytes(
  { videoDir, keys, edgeKey }: BytesDeps,
  req: IncomingMessage,
  res: ServerResponse,
  videoId: string,
  mediaPath: string,
  { handle, stat, realPath }: OpenedMedia,
  headers: Record<string, string>,
  fileHeaders: Record<string, string>,
): Promise<void> {
  let encrypted: EncryptedFile | null;
  try {
    const size = Number(stat.size);
    encrypted = (await encryptedOriginal(keys, videoId, mediaPath, handle, size)) ?? (await sealedImage(keys, videoDir, videoId, realPath, handle, size));
  } catch (err) {
    await handle.close();
    throw err;
  }
  if (encrypted) {
    const handover = edgeKey !== null && edgeDecrypts(req) ? { edgeKey, videoId, relativePath: realPath } : null;
    return void bytesServed.inc(await sendEncryptedFile(req, res, encrypted, validatorsOf(stat), headers, fileHeaders, handover));
  }
  const plan = planResponse({ size: Number(stat.size), validators: validatorsOf(stat) }, req.headers);
  // Files being encrypted in place are sent from the descriptor opened here: nginx would reopen the path.
  const edge = viaEdge(req) && !(await sealingInPlace(videoDir, videoId, realPath)) && !(await encryptingInPlace(videoDir, videoId, mediaPath));
  if (plan.status === 416 || plan.status === 304 || req.method === 'HEAD' || edge) await handle.close();
  // About the file, as nginx answers it: the file's validator and the media headers, not an error's no-store.
  if (plan.status === 416) throw new RangeNotSatisfiableError(Number(stat.size), { ...fileHeaders, ETag: plan.headers.ETag! });
  if (edge && plan.status !== 304) {
    // nginx sends the bytes (or the headers of a HEAD) as planned here.
    const send = plan.status === 206 ? 'range' : 'whole';
    res.writeHead(200, { ...headers, ETag: plan.headers.ETag!, ...(plan.status === 200 ? { 'Accept-Ranges': 'bytes' } : {}), 'X-Accel-Redirect': edgeRedirect(send, videoId, realPath), 'Content-Length': '0' });
    return void res.end();
  }
  // As nginx: a 304 has no body whose type to give.
  const { 'Content-Type': _type, ...headersOf304 } = headers;
  res.writeHead(plan.status, { ...(plan.status === 304 ? headersOf304 : headers), ...plan.headers });
  if (plan.status === 304 || req.method === 'HEAD') return void res.end();
  bytesServed.inc(await streamFile(res, handle, plan.start, plan.end));
}
