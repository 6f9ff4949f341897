/**
 * The content-key URL of encrypted renditions: `POST /media/videos/<id>/<dir>/clearkey?token=`,
 * a ClearKey license (W3C EME §9.1.4) for the players' EME: `{"keys":[{"kty":"oct","kid","k"}]}`,
 * base64url, the one key of the video (shared/transcode/encrypt-renditions.ts; key id = video id).
 *
 * The token is the one the playlist or manifest was signed with (its scope, `hls/` or `preview/`,
 * covers `<dir>/clearkey`), checked like a segment's. The request body (the key ids the CDM asks
 * for) is not read: the media edge does not forward media request bodies, and the answer is the
 * same whichever ids were asked. The fetch of the key is the disclosure, so it is audited
 * (`access`/`content_key`, granted or denied, fail closed); `Cache-Control: no-store`, and the key
 * is in the body only — never in a URL, a log line or an audit entry.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AccessAttempt, AccessAudit } from './access-audit.js';
import { mediaToken, type MediaUrl } from './media-path.js';
import type { TokenCodec } from './tokens.js';
import { keyIdOf } from '../crypto/cenc.js';
import { renditionKey, type VideoKeys } from '../keys/video-keys.js';
import { refuseIfDeleted } from '../lifecycle/tombstone.js';
import { AppError, NotFoundError } from '../platform/errors.js';
import { sendJson } from '../platform/http.js';
import { isVideoId } from '../video/store.js';
import { CLEARKEY_NAME } from '../transcode/encrypt-renditions.js';

const KEY_PATH_RE = new RegExp(`^[A-Za-z0-9_-]{1,128}/${CLEARKEY_NAME}$`);

/** Whether a request's path (after the video id) is a key URL. */
export const isContentKeyPath = (rest: string) => KEY_PATH_RE.test(rest);

export interface ContentKeyDeps {
  videoDir: string;
  keys: VideoKeys | null;
  tokens: TokenCodec;
  access: AccessAudit;
}

export async function answerContentKey(d: ContentKeyDeps, res: ServerResponse, url: MediaUrl, attempt: AccessAttempt, headers: Record<string, string>): Promise<void> {
  attempt.action = 'content_key';
  attempt.resource = url.rest;
  const key = await d.access.check(attempt, async () => {
    const token = mediaToken(url);
    if (!isVideoId(url.videoId)) throw new NotFoundError('no such video');
    d.tokens.verify(token, url.videoId, url.rest);
    await refuseIfDeleted(d.videoDir, url.videoId);
    const dataKey = await d.keys?.dataKey(url.videoId);
    // Stored in the clear (or shredded): its renditions need no key.
    if (!dataKey) throw new AppError(404, 'no_content_key', 'this video has no encrypted renditions');
    return renditionKey(dataKey);
  });
  await d.access.granted(attempt);
  sendJson(res, 200, { keys: [{ kty: 'oct', kid: keyIdOf(url.videoId).toString('base64url'), k: key.toString('base64url') }], type: 'temporary' }, { ...headers, 'Cache-Control': 'no-store' });
}
