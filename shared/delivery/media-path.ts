/**
 * Media paths: which files of `VIDEO_DIR/<videoId>/` may be signed and served,
 * and opening them without ever leaving that directory.
 *
 * A media path is 1–4 segments of `[A-Za-z0-9._-]` that do not start with a dot,
 * ending in a served extension. A URL path is percent-decoded exactly once, then
 * held to that rule, so `..`, encoded slashes (`%2f`), backslashes, NUL, overlong
 * UTF-8 (`%c0%ae`), double encoding (`%252e`) and absolute paths are all refused
 * by one allow-list rather than a list of known attacks. `meta.json`, its temp
 * files (`meta.*`) and temp/partial outputs (`*.tmp`, `*.part`, dot-files) are
 * never served. Symlinks are resolved and the result must still be a servable
 * path inside the video's own directory.
 */
import { constants, type BigIntStats } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { AppError, BadRequestError, ForbiddenError, NotFoundError } from '../platform/errors.js';
import { isVideoId } from '../video/store.js';

/** Served extensions and their Content-Type. */
export const MEDIA_TYPES: Readonly<Record<string, string>> = {
  m3u8: 'application/vnd.apple.mpegurl',
  mpd: 'application/dash+xml',
  m4s: 'video/iso.segment',
  mp4: 'video/mp4',
  m4v: 'video/mp4',
  m4a: 'audio/mp4',
  ts: 'video/mp2t',
  aac: 'audio/aac',
  vtt: 'text/vtt; charset=utf-8',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  json: 'application/json',
  // Originals keep their probed container (shared/video/probe.ts STORED_EXTENSIONS).
  mov: 'video/quicktime',
  mkv: 'video/x-matroska',
  webm: 'video/webm',
  avi: 'video/x-msvideo',
  mpg: 'video/mpeg',
  flv: 'video/x-flv',
  wmv: 'video/x-ms-wmv',
  ogv: 'video/ogg',
  '3gp': 'video/3gpp',
};

const SEGMENT_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
/** meta.json and its temp files; temp or partial outputs of any writer. */
const RESERVED_RE = /^meta\.|\.(tmp|temp|part|partial)(\.|$)/i;
const MAX_SEGMENTS = 4;

export class InvalidMediaPathError extends BadRequestError {
  constructor() {
    super('invalid media path', 'invalid_path');
  }
}

function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot === -1 ? '' : name.slice(dot + 1).toLowerCase();
}

/** Each segment a servable name: allowed characters, not a dot-file, not reserved. */
function checkNames(segments: string[]): void {
  for (const s of segments) if (!SEGMENT_RE.test(s) || RESERVED_RE.test(s)) throw new InvalidMediaPathError();
}

/** Validate decoded segments; returns the canonical relative path (`hls/240p.m3u8`). */
function checkSegments(segments: string[]): string {
  if (segments.length === 0 || segments.length > MAX_SEGMENTS) throw new InvalidMediaPathError();
  checkNames(segments);
  if (!(extensionOf(segments[segments.length - 1]!) in MEDIA_TYPES)) throw new InvalidMediaPathError();
  return segments.join('/');
}

/** A media path as given in a JSON body (`POST /media/sign`): not URL-encoded. */
export function parseMediaPath(value: string): string {
  return checkSegments(value.split('/'));
}

/** The still-encoded rest of a request URL (`hls/240p.m3u8`), decoded exactly once. */
export function parseUrlMediaPath(raw: string): string {
  const segments = raw.split('/').map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new InvalidMediaPathError(); // malformed escapes, overlong UTF-8
    }
  });
  return checkSegments(segments);
}

/**
 * What the media edge asks the stream function to grant (shared/delivery/edge.ts):
 * a directory inside the video (`hls/240p/`, 1–3 segments, ending in `/`), whose
 * files nginx then sends under one cached decision, or a file at the video's top
 * level (`original.mp4`), granted alone.
 */
export function parseGrantUnit(raw: string): string {
  if (!raw.endsWith('/')) {
    const file = parseUrlMediaPath(raw);
    if (file.includes('/')) throw new InvalidMediaPathError();
    return file;
  }
  const segments = raw.slice(0, -1).split('/');
  if (segments.length >= MAX_SEGMENTS) throw new InvalidMediaPathError();
  checkNames(segments);
  return raw;
}

/** Files that name other files of the video, rewritten per token: HLS, DASH and WebVTT (seek-thumbnail indexes). */
export type PlaylistKind = 'm3u8' | 'mpd' | 'vtt';

export function playlistKind(mediaPath: string): PlaylistKind | null {
  const ext = extensionOf(mediaPath);
  return ext === 'm3u8' || ext === 'mpd' || ext === 'vtt' ? ext : null;
}

export function mediaTypeOf(mediaPath: string): string {
  return MEDIA_TYPES[extensionOf(mediaPath)] ?? 'application/octet-stream';
}

/**
 * What a token for `mediaPath` grants: a playlist, manifest or thumbnail index grants
 * its whole directory (its variants, segments, init and key files, sprite sheets),
 * anything else only itself.
 */
export function scopeForPath(mediaPath: string): string {
  if (!playlistKind(mediaPath)) return mediaPath;
  const dir = path.posix.dirname(mediaPath);
  if (dir === '.') throw new BadRequestError('playlists and manifests must live in a directory of their own (e.g. hls/)', 'invalid_path');
  return `${dir}/`;
}

export interface OpenedMedia {
  handle: FileHandle;
  stat: BigIntStats;
  /** The opened file's real path inside the video's directory (symlinks resolved). */
  realPath: string;
}

/** Opens media files of `VIDEO_DIR/<videoId>/`, never anything else. */
export class MediaFiles {
  private rootReal: string | null = null;

  constructor(private readonly videoDir: string) {}

  /** Open a validated media path read-only; the caller closes the handle. */
  async open(videoId: string, mediaPath: string): Promise<OpenedMedia> {
    if (!isVideoId(videoId)) throw new NotFoundError('no such video');
    this.rootReal ??= await realpath(this.videoDir);
    const videoRoot = path.join(this.rootReal, videoId) + path.sep;
    let real: string;
    try {
      real = await realpath(videoRoot + mediaPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') throw new NotFoundError('no such file');
      throw err;
    }
    // A symlink may point anywhere: the target itself must be a servable path in this video's dir.
    if (!real.startsWith(videoRoot)) throw new AppError(404, 'path_escape', 'no such file');
    const realPath = real.slice(videoRoot.length);
    try {
      checkSegments(realPath.split(path.sep));
    } catch {
      throw new AppError(404, 'path_escape', 'no such file');
    }
    let handle: FileHandle;
    try {
      // O_NONBLOCK: opening a FIFO (or a device) someone planted would otherwise block an I/O
      // thread until a writer appears; regular files ignore the flag. fstat below refuses them.
      handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP') throw new NotFoundError('no such file');
      throw err;
    }
    try {
      const stat = await handle.stat({ bigint: true });
      if (!stat.isFile()) throw new NotFoundError('no such file');
      return { handle, stat, realPath };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }
}

const MEDIA_URL_PREFIX = '/media/videos/';

export interface MediaUrl {
  /** The raw id segment (check it with isVideoId before trusting it). */
  videoId: string;
  /** The still-encoded rest after the id (`hls/240p.m3u8`, `metadata`). */
  rest: string;
  /** The raw query string (without `?`); read the token with mediaToken(). */
  query: string;
}

/** Split `/media/videos/<id>/<rest>?token=…` (the public path, which functions receive unchanged). */
export function parseMediaUrl(url: string): MediaUrl {
  const q = url.indexOf('?');
  const pathname = q === -1 ? url : url.slice(0, q);
  if (!pathname.startsWith(MEDIA_URL_PREFIX)) throw new NotFoundError('no such route');
  const tail = pathname.slice(MEDIA_URL_PREFIX.length);
  const slash = tail.indexOf('/');
  if (slash === -1) throw new NotFoundError('no such route');
  return { videoId: tail.slice(0, slash), rest: tail.slice(slash + 1), query: q === -1 ? '' : url.slice(q + 1) };
}

/**
 * The URL's one `token` parameter, null when there is none. Two of them, or one spelled
 * otherwise (`TOKEN`, `Token`: nginx's `$arg_token` matches names case-insensitively), are a
 * 400: a proxy and this function must never disagree about which string is the token.
 */
export function mediaToken(url: MediaUrl): string | null {
  const tokens = [...new URLSearchParams(url.query)].filter(([name]) => name.toLowerCase() === 'token');
  if (tokens.length > 1 || tokens.some(([name]) => name !== 'token')) {
    throw new BadRequestError('give exactly one token parameter, spelled `token`', 'token_malformed');
  }
  return tokens[0]?.[1] ?? null;
}
