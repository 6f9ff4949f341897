/**
 * Serving an encrypted original (shared/crypto/chunked.ts) over HTTP — and a sealed image
 * (./images.ts), stored in the same format: the same validators, conditionals and single ranges
 * as any media file (shared/delivery/media-response.ts), over the plaintext's size, decrypting only
 * the chunks a range lies in. nginx cannot send these bytes as they are on disk (ciphertext), so the
 * media edge never gets a grant for one; an edge with its decryption module gets each planned range
 * handed over instead (`handover`: shared/delivery/edge-decrypt.ts), and decrypts it the same way.
 *
 * A chunk that fails its tag is never sent: a range up to WHOLE_READ_MAX_BYTES is decrypted before
 * the status line (the client gets a 500 `media_integrity`); a longer one that fails mid-way is cut
 * off (the connection is destroyed), so a client never receives a byte that did not authenticate.
 */
import { once } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { deriveKey, type VideoKeys } from '../keys/video-keys.js';
import { EDGE_DECRYPT_GRANT_HEADER, edgeDecryptRedirect, sealEdgeGrant } from '../delivery/edge-decrypt.js';
import { planResponse, WHOLE_READ_MAX_BYTES, type Validators } from '../delivery/media-response.js';
import { RangeNotSatisfiableError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import { EncryptedFile, isEncryptedFile, MissingKeyError, readEncryptedHeader, type PlainWindow } from './chunked.js';

/** The original, decrypted here; sealed images are found by their directory's mark (./images.ts), renditions are CENC that players decrypt. */
const ORIGINAL = /^original\.[a-z0-9]+$/;

/** The open file (`fileSize` bytes) as an encrypted original to decrypt, or null when it is served as it is. */
export async function encryptedOriginal(keys: VideoKeys | null, videoId: string, mediaPath: string, handle: FileHandle, fileSize: number): Promise<EncryptedFile | null> {
  if (!ORIGINAL.test(mediaPath)) return null;
  const header = await readEncryptedHeader(handle, fileSize);
  if (!header) return null;
  const dataKey = keys ? await keys.dataKey(videoId) : null;
  if (!dataKey) throw new MissingKeyError();
  return EncryptedFile.withHeader(handle, header, deriveKey(dataKey, 'original'), videoId);
}

/**
 * Left, for good, beside an original that is ciphertext or is about to become it: by finalize before
 * it encrypts (shared/finalize/finalizer.ts), by `pulsevault encrypt` before its switch (./migrate.ts).
 * nginx never asks for a grant of such an original (services/media-edge): every request of it goes to
 * the stream function, which decides it and decrypts it (or hands it to the edge's module), and a
 * grant cached while it was plaintext never sends its ciphertext.
 */
export const ORIGINAL_ENCRYPTED_MARK = '.original-encrypted';

/**
 * Whether `mediaPath` is an original being (or done being) encrypted in place: a plaintext one is
 * then sent from the file the function opened, never by nginx reopening its path, which the switch
 * may have renamed the ciphertext onto since.
 */
export async function encryptingInPlace(videoDir: string, videoId: string, mediaPath: string): Promise<boolean> {
  return ORIGINAL.test(mediaPath) && exists(path.join(videoDir, videoId, ORIGINAL_ENCRYPTED_MARK));
}

/** Whether `videoDir/videoId/mediaPath` is an encrypted original (the edge's grant is refused for it). */
export async function isEncryptedOriginal(videoDir: string, videoId: string, mediaPath: string): Promise<boolean> {
  return ORIGINAL.test(mediaPath) && isEncryptedFile(path.join(videoDir, videoId, mediaPath));
}

/** A window to the socket, its buffer released once the socket is done with it; false when the response wants a drain first. */
const writeWindow = (res: ServerResponse, window: PlainWindow): boolean => res.write(window.bytes, () => window.release());

/**
 * Until the socket wants more, or the client went away (ffmpeg seeking drops its connection). The
 * listener of the event that did not come is removed: a long answer waits here once per window,
 * and listeners left behind piled up (MaxListenersExceededWarning on a whole original or chunk).
 */
async function drainOrClose(res: ServerResponse): Promise<void> {
  const done = new AbortController();
  await Promise.race([once(res, 'drain', { signal: done.signal }), once(res, 'close', { signal: done.signal })]).finally(() => done.abort());
}

/** A media edge that decrypts (shared/delivery/edge-decrypt.ts), and the file's real path in its video. */
export interface EdgeHandover {
  edgeKey: string;
  videoId: string;
  relativePath: string;
}

/**
 * Answer a GET/HEAD of an encrypted file (an original, a sealed image) and close it. `headers` go on every answer,
 * `errorHeaders` on a 416. With `handover`, the edge decrypts and sends the planned bytes (a grant and
 * X-Accel-Redirect). Resolves with the plaintext bytes sent here.
 */
export async function sendEncryptedFile(
  req: IncomingMessage,
  res: ServerResponse,
  file: EncryptedFile,
  validators: Validators,
  headers: Record<string, string>,
  errorHeaders: Record<string, string>,
  handover: EdgeHandover | null = null,
): Promise<number> {
  try {
    const plan = planResponse({ size: file.size, validators }, req.headers);
    if (plan.status === 416) throw new RangeNotSatisfiableError(file.size, { ...errorHeaders, ETag: plan.headers.ETag! });
    if (plan.status === 304 || req.method === 'HEAD') {
      const { 'Content-Type': _type, ...headersOf304 } = headers;
      res.writeHead(plan.status, { ...(plan.status === 304 ? headersOf304 : headers), ...plan.headers });
      res.end();
      return 0;
    }
    const length = plan.end - plan.start + 1;
    if (handover) {
      const uri = edgeDecryptRedirect(handover.videoId, handover.relativePath);
      const grant = sealEdgeGrant(handover.edgeKey, uri, { status: plan.status, start: plan.start, length, videoId: handover.videoId, key: file.key });
      // The module sets Content-Length, Content-Range and Last-Modified (the same file's); nginx keeps Accept-Ranges and re-adds the ETag.
      res.writeHead(200, {
        ...headers,
        ETag: plan.headers.ETag!,
        ...(plan.status === 200 ? { 'Accept-Ranges': 'bytes' } : {}),
        'X-Accel-Redirect': uri,
        [EDGE_DECRYPT_GRANT_HEADER]: grant,
        'Content-Length': '0',
      });
      res.end();
      return 0;
    }
    if (length <= WHOLE_READ_MAX_BYTES) {
      const body: PlainWindow[] = [];
      try {
        for await (const window of file.range(plan.start, plan.end)) body.push(window);
      } catch (err) {
        for (const window of body) window.release();
        throw err;
      }
      res.writeHead(plan.status, { ...headers, ...plan.headers });
      res.cork();
      for (const window of body) writeWindow(res, window);
      res.uncork();
      res.end();
      return length;
    }
    res.writeHead(plan.status, { ...headers, ...plan.headers });
    let sent = 0;
    try {
      for await (const window of file.range(plan.start, plan.end)) {
        if (res.destroyed) {
          window.release();
          break;
        }
        const more = writeWindow(res, window);
        sent += window.bytes.length;
        if (!more) await drainOrClose(res);
      }
      res.end();
    } catch {
      res.destroy(); // mid-body: cut off rather than send an unauthenticated byte
    }
    return sent;
  } finally {
    await file.close();
  }
}
