/**
 * `GET /media/videos?status=&owner=&limit=&cursor=`: list videos, newest upload
 * first, from the PostgreSQL mirror when one is configured, else from the media
 * volume itself (every meta.json read per page: fine for the hundreds of videos
 * of a small site; the mirror is what scales).
 *
 * Keyset pagination on (uploadedAt, id): the opaque cursor carries the last row's
 * key, and the next page is the rows strictly before it. Pages stay stable while
 * uploads arrive (new videos sort before every cursor); on the mirror each page
 * costs an index range scan however deep the caller pages. Admins see every
 * video and may filter by owner; anyone else sees only their own.
 */
import { BadRequestError, ForbiddenError, NotFoundError, ServiceUnavailableError } from '../platform/errors.js';
import { hasRole, MAX_SUBJECT_LENGTH, type Role } from '../auth/jwt.js';
import { isVideoId, MetaCorruptError, videoIdBatches, type MediaStore, type VideoMeta } from '../video/store.js';
import { isVideoStatus, VIDEO_STATUSES, type VideoStatus } from '../video/state.js';
import { isUnavailable, type MetadataMirror } from '../mirror/mirror.js';

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 100;
const PARAMS = ['status', 'owner', 'limit', 'cursor'] as const;

/** The authenticated caller, as the JWT check (shared/auth/jwt.ts) gives it. */
export interface ListingCaller {
  userId: string;
  roles: readonly Role[];
}

export interface ListingQuery {
  status: VideoStatus | null;
  owner: string | null;
  limit: number;
  after: { uploadedAt: string; id: string } | null;
}

export interface ListedVideo {
  videoId: string;
  owner: string | null;
  status: string;
  progress: number | null;
  uploadedAt: string;
  updatedAt: string;
  duration: number | null;
  width: number | null;
  height: number | null;
  renditions: string[];
  size: number;
  checksum: string;
  /**
   * From the volume always (every listed video is the caller's to manage, as for the
   * metadata view's private fields); from the mirror only when it holds them (METADATA_MIRROR_PHI=true).
   */
  title?: string;
  description?: string;
  /** Relative to the video (`hls/poster.jpg`), once transcoded; a token for the master opens it. Volume listing only. */
  poster?: string;
}

export interface ListingBody {
  videos: ListedVideo[];
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
  limit: number;
}

function encodeCursor(uploadedAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([uploadedAt.toISOString(), id])).toString('base64url');
}

function decodeCursor(cursor: string): ListingQuery['after'] {
  const invalid = new BadRequestError('cursor is not valid; pass the nextCursor of a previous page', 'invalid_cursor');
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) throw invalid;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid;
  }
  if (!Array.isArray(key) || key.length !== 2) throw invalid;
  const [uploadedAt, id] = key as unknown[];
  if (typeof uploadedAt !== 'string' || typeof id !== 'string' || !isVideoId(id)) throw invalid;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(uploadedAt) || Number.isNaN(Date.parse(uploadedAt))) throw invalid;
  return { uploadedAt, id };
}

/** Validate the query string; BadRequestError naming the parameter otherwise. */
export function parseListingQuery(params: URLSearchParams): ListingQuery {
  for (const key of new Set(params.keys())) {
    if (!(PARAMS as readonly string[]).includes(key)) throw new BadRequestError(`unknown query parameter ${JSON.stringify(key)}; allowed: ${PARAMS.join(', ')}`);
    if (params.getAll(key).length > 1) throw new BadRequestError(`query parameter ${key} given more than once`);
  }
  const status = params.get('status') || null;
  if (status !== null && !isVideoStatus(status)) {
    throw new BadRequestError(`status must be one of ${VIDEO_STATUSES.join(', ')}`);
  }
  const owner = params.get('owner') || null;
  if (owner !== null && owner.length > MAX_SUBJECT_LENGTH) throw new BadRequestError(`owner must be at most ${MAX_SUBJECT_LENGTH} characters`);
  const rawLimit = params.get('limit') || null;
  let limit = DEFAULT_LIMIT;
  if (rawLimit !== null) {
    limit = /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : NaN;
    if (!(limit >= 1 && limit <= MAX_LIMIT)) throw new BadRequestError(`limit must be an integer from 1 to ${MAX_LIMIT}`);
  }
  const cursor = params.get('cursor') || null;
  return { status, owner, limit, after: cursor === null ? null : decodeCursor(cursor) };
}

interface ListedRow {
  id: string;
  owner: string | null;
  status: string;
  progress: number | null;
  uploaded_at: Date;
  updated_at: Date;
  duration: number | null;
  width: number | null;
  height: number | null;
  renditions: string[];
  size: string;
  checksum: string;
  title: string | null;
  description: string | null;
}

function toListed(r: ListedRow): ListedVideo {
  return {
    videoId: r.id,
    owner: r.owner,
    status: r.status,
    progress: r.progress,
    uploadedAt: r.uploaded_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    duration: r.duration,
    width: r.width,
    height: r.height,
    renditions: r.renditions,
    size: Number(r.size),
    checksum: r.checksum,
    ...(r.title !== null ? { title: r.title } : {}),
    ...(r.description !== null ? { description: r.description } : {}),
  };
}

/** Where a listing reads from: the mirror when configured, the media volume otherwise. */
export interface ListingSource {
  mirror: MetadataMirror | null;
  store: MediaStore;
}

/** One page of `query` for `caller`. */
export async function listVideos(source: ListingSource, query: ListingQuery, caller: ListingCaller): Promise<ListingBody> {
  const isAdmin = hasRole(caller, 'admin');
  if (!isAdmin && query.owner !== null && query.owner !== caller.userId) {
    throw new ForbiddenError('only admins may list the videos of another owner');
  }
  const owner = isAdmin ? query.owner : caller.userId;
  return source.mirror ? listFromMirror(source.mirror, query, owner) : listFromVolume(source.store, query, owner);
}

async function listFromMirror(mirror: MetadataMirror, query: ListingQuery, owner: string | null): Promise<ListingBody> {
  const where: string[] = [];
  const values: unknown[] = [];
  const bind = (v: unknown) => `$${values.push(v)}`;
  if (owner !== null) where.push(`owner = ${bind(owner)}`);
  if (query.status !== null) where.push(`status = ${bind(query.status)}`);
  if (query.after) where.push(`(uploaded_at, id) < (${bind(query.after.uploadedAt)}::timestamptz, ${bind(query.after.id)}::uuid)`);
  const sql = `SELECT id, owner, status, progress, uploaded_at, updated_at, duration, width, height, renditions, size, checksum, title, description
FROM videos ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
ORDER BY uploaded_at DESC, id DESC LIMIT ${bind(query.limit + 1)}`;

  let rows: ListedRow[];
  try {
    await mirror.ready();
    rows = (await mirror.pool.query<ListedRow>(sql, values)).rows;
  } catch (err) {
    // The disk is the truth and the mirror optional: its outage is a 503 to retry, not a 500.
    if (!isUnavailable(err)) throw err;
    throw new ServiceUnavailableError('the metadata mirror database is unavailable; retry later', 'mirror_unavailable');
  }
  return page(rows.map(toListed), query.limit);
}

/** meta.json files read at once while listing the volume. */
const VOLUME_READ_BATCH = 32;

function fromMeta(meta: VideoMeta): ListedVideo {
  const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const title = text(meta.metadata.title);
  const description = text(meta.metadata.description);
  return {
    videoId: meta.videoId,
    owner: meta.owner,
    status: meta.status,
    progress: meta.status === 'transcoding' ? (meta.progress ?? null) : null,
    // Normalised like the mirror's timestamptz, so cursors are the same for both sources.
    uploadedAt: new Date(meta.uploadedAt).toISOString(),
    updatedAt: new Date(meta.updatedAt).toISOString(),
    duration: meta.duration,
    width: meta.width,
    height: meta.height,
    renditions: meta.renditions,
    size: meta.size,
    checksum: meta.checksum,
    ...(title !== undefined ? { title } : {}),
    ...(description !== undefined ? { description } : {}),
    ...(meta.status === 'transcoded' && meta.outputs?.poster ? { poster: meta.outputs.poster } : {}),
  };
}

/** Newest upload first, then the greater id, as the mirror's ORDER BY uploaded_at DESC, id DESC. */
const listingOrder = (a: ListedVideo, b: ListedVideo) =>
  a.uploadedAt === b.uploadedAt ? (a.videoId < b.videoId ? 1 : a.videoId > b.videoId ? -1 : 0) : a.uploadedAt < b.uploadedAt ? 1 : -1;

async function listFromVolume(store: MediaStore, query: ListingQuery, owner: string | null): Promise<ListingBody> {
  const { after } = query;
  const isBeforeCursor = (v: ListedVideo) => !after || v.uploadedAt < after.uploadedAt || (v.uploadedAt === after.uploadedAt && v.videoId < after.id);
  const matches: ListedVideo[] = [];
  const readBatch = async (ids: string[]) => {
    const metas = await Promise.all(
      ids.map((id) =>
        store.read(id).catch((err: unknown) => {
          // A directory finalize is still filling has no meta.json yet; a corrupt one is the scrub's to report.
          if (err instanceof NotFoundError || err instanceof MetaCorruptError) return null;
          throw err;
        }),
      ),
    );
    for (const meta of metas) {
      if (!meta || (owner !== null && meta.owner !== owner) || (query.status !== null && meta.status !== query.status)) continue;
      const listed = fromMeta(meta);
      if (isBeforeCursor(listed)) matches.push(listed);
    }
  };

  try {
    for await (const ids of videoIdBatches(store.videoDir, VOLUME_READ_BATCH)) await readBatch(ids);
  } catch (err) {
    // No video was ever stored (finalize creates the directory).
    const { code, path } = err as NodeJS.ErrnoException;
    if (code === 'ENOENT' && path === store.videoDir) return page([], query.limit);
    throw err;
  }
  return page(matches.sort(listingOrder).slice(0, query.limit + 1), query.limit);
}

/** The first `limit` of `sorted` (which holds up to limit + 1: one more means another page follows). */
function page(sorted: ListedVideo[], limit: number): ListingBody {
  const videos = sorted.slice(0, limit);
  const last = videos.at(-1);
  return {
    videos,
    nextCursor: sorted.length > limit && last ? encodeCursor(new Date(last.uploadedAt), last.videoId) : null,
    limit,
  };
}
