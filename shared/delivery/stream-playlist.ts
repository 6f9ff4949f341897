/**
 * A playlist (HLS, DASH, WebVTT) served to a token's holder: read whole, every child
 * URI rewritten to carry the same token (cached per file version and token), sent
 * without validators or ranges — players fetch playlists whole.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OpenedMedia, PlaylistKind } from './media-path.js';
import { fileVersionOf } from './media-response.js';
import type { PlaylistCache } from './playlist-rewrite.js';
import { AppError } from '../platform/errors.js';

/** Larger "playlists" are refused rather than read into memory. */
const MAX_PLAYLIST_BYTES = 16 * 1024 * 1024;

/** Closes `opened.handle` whatever happens. `key` names the file (video and path) in the cache. */
export async function sendPlaylist(
  playlists: PlaylistCache,
  req: IncomingMessage,
  res: ServerResponse,
  { handle, stat }: Pick<OpenedMedia, 'handle' | 'stat'>,
  kind: PlaylistKind,
  key: string,
  token: string,
  headers: Record<string, string>,
): Promise<void> {
  let body: string;
  try {
    if (stat.size > MAX_PLAYLIST_BYTES) throw new AppError(500, 'playlist_too_large', 'playlist too large to serve');
    body = await playlists.render(kind, `${key}@${fileVersionOf(stat)}`, () => handle.readFile('utf8'), token);
  } finally {
    await handle.close();
  }
  res.writeHead(200, { ...headers, 'Accept-Ranges': 'none', 'Content-Length': String(Buffer.byteLength(body)) });
  res.end(req.method === 'HEAD' ? undefined : body);
}
