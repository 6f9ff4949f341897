/**
 * The media store: `VIDEO_DIR/<videoId>/` directories and their canonical
 * `meta.json`. The disk is the source of truth; Redis only caches it.
 *
 * meta.json carries `metaChecksum`, a SHA-256 over the RFC 8785 serialisation of
 * the document without that field. Every read verifies it, so a corrupted
 * meta.json is reported (MetaCorruptError), never silently served.
 *
 * With the vault's keys (shared/keys/), the PHI fields of an encrypted video are sealed on every
 * write and opened on every read (shared/crypto/fields.ts): callers see plain documents, the disk
 * and the Redis cache hold only the sealed form, and the checksum covers that form. A store
 * without keys (tools that need no PHI) keeps a sealed document's `sealed` as it found it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, opendir, readFile } from 'node:fs/promises';
import path from 'node:path';
import canonicalize from 'canonicalize';
import { openFields, sealFields, type SealedFields } from '../crypto/fields.js';
import { deriveKey, type VideoKeys } from '../keys/video-keys.js';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { AppError, NotFoundError } from '../platform/errors.js';
import { isUuid } from '../platform/ids.js';
import { exceededJsonBound } from '../platform/json-bounds.js';
import type { RenditionName } from '../platform/config.js';
import type { Redis } from '../platform/redis.js';
import { RedisLease } from '../platform/redis-lease.js';
import type { VideoCodecFamily } from '../transcode/ladder.js';
import type { VideoStatus } from './state.js';

export function isVideoId(id: string): boolean {
  return isUuid(id);
}

/** The ids of the video directories under `videoDir`, `size` at a time, streamed (opendir: no listing held in memory). */
export async function* videoIdBatches(videoDir: string, size: number): AsyncGenerator<string[]> {
  let batch: string[] = [];
  for await (const entry of await opendir(videoDir)) {
    if (!entry.isDirectory() || !isVideoId(entry.name)) continue;
    batch.push(entry.name);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/** One published rendition, as the transcoder encoded it. */
export interface RenditionRung {
  name: RenditionName;
  width: number;
  height: number;
  kbps: number;
}

/** Transcode outputs, relative to the video dir. */
export interface VideoOutputs {
  hlsMaster?: string;
  dashManifest?: string;
  poster?: string;
  /** Seek-thumbnail index (WebVTT over JPEG sprite sheets beside it). */
  thumbnails?: string;
}

export interface VideoMeta {
  videoId: string;
  /** User-supplied, may be PHI: stored here only, never logged or audited. */
  filename: string;
  owner: string | null;
  /** Written only through shared/video/state.ts. */
  status: VideoStatus;
  /** 0–100 while transcoding. */
  progress?: number;
  failureReason?: string;
  uploadedAt: string;
  updatedAt: string;
  /** Original's file name inside the video dir, e.g. `original.mp4`. */
  original: string;
  size: number;
  /** `sha256:<hex>` of the original. */
  checksum: string;
  duration: number | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  videoCodec: string | null;
  audioCodec: string | null;
  bitrate: number | null;
  /** Names of the published renditions (`240p`, …), lowest first. */
  renditions: string[];
  /** User's metadata object (title, description, …): may be PHI. */
  metadata: Record<string, unknown>;
  /** Transcode outputs, once published. */
  outputs?: VideoOutputs;
  /**
   * A fanned-out video's early rendition (shared/transcode/fanout.ts): its lowest rung and the
   * audio, playable while the chunks are encoded; listed by /metadata only while transcoding.
   */
  preview?: { rendition: RenditionName; hlsMaster: string; dashManifest: string };
  /** Upload this video was finalized from (idempotent finalize). */
  uploadId?: string;
  /** Attempt number of the transcode job that last started (1 = first). */
  transcodeAttempt?: number;
  transcodeStartedAt?: string;
  transcodedAt?: string;
  /** The published ladder's exact sizes and bitrates. */
  ladder?: RenditionRung[];
  /** Video codec families the ladder was encoded in. */
  codecs?: VideoCodecFamily[];
  /** Until when the record must be kept (ISO): finalize sets it from RETENTION_DAYS, an admin's PATCH may change it. */
  retainUntil?: string | null;
  /** While set, delete and retention refuse (409 legal_hold). `reason` is a code (shared/lifecycle/reasons.ts). */
  legalHold?: LegalHold | null;
  /** Set when the video is disposed of (status `deleted`): what the tombstone proves. */
  deletion?: Deletion;
  /** The original is stored encrypted (shared/crypto/chunked.ts) under the video's data key. */
  encrypted?: boolean;
  /** Its published renditions or images are (some of them) still clear: an in-place encryption under way (shared/crypto/migrate-media.ts). */
  clearMedia?: true;
  /** On disk only: filename and metadata, sealed under the video's key (readers with keys never see it). */
  sealed?: SealedFields;
  /** SHA-256 of the canonical document without this field (stamped by MediaStore.write). */
  metaChecksum?: string;
}

export interface LegalHold {
  since: string;
  reason: string;
}

/** A tombstone's record of the disposal (meta.json keeps `checksum` and `size` of the destroyed original). */
export interface Deletion {
  deletedAt: string;
  /** The caller's keyed pseudonym (shared/audit/subject.ts), never the subject. */
  deletedBy: string | null;
  reason: string;
  /** When the last byte was removed; null while the disposal is unfinished (a sweep finishes it). */
  disposedAt: string | null;
}

export class MetaCorruptError extends AppError {
  constructor(videoId: string, detail: string) {
    super(500, 'meta_corrupt', `metadata of video ${videoId} failed its integrity check (${detail})`);
  }
}

/** Far above anything finalize lets in (shared/finalize/request.ts bounds `metadata`). */
const META_JSON_BOUNDS = { maxDepth: 64, maxMembers: 100_000 };

export function metaChecksum(meta: VideoMeta): string {
  // canonicalize recurses: never hand it a document deep enough to overflow the stack.
  if (exceededJsonBound(meta, META_JSON_BOUNDS)) throw new RangeError('meta.json is nested too deeply or too large');
  return checksumWithinBounds(meta);
}

/** metaChecksum for a document already checked against META_JSON_BOUNDS (parseMeta: one walk per read, not two). */
function checksumWithinBounds(meta: VideoMeta): string {
  const { metaChecksum: _ignored, ...rest } = meta;
  return `sha256:${createHash('sha256').update(canonicalize(rest) ?? '').digest('hex')}`;
}

/** Redis key of the cached meta.json (MetadataReader in shared/delivery/metadata-view.ts fills it; write() drops it). */
export const metaCacheKey = (videoId: string) => `pulsevault:meta:${videoId}`;
export const metaLockKey = (videoId: string) => `pulsevault:lock:meta:${videoId}`;
/** How long an update holds the lock at most (a crashed holder blocks the video this long), and waits for it. */
const META_LOCK_MS = 10_000;

export type MetaListener = (meta: VideoMeta) => void | Promise<void>;

export class MediaStore {
  private readonly listeners: MetaListener[] = [];

  constructor(
    readonly videoDir: string,
    private readonly redis: Redis | null = null,
    readonly keys: VideoKeys | null = null,
  ) {}

  /** Called after every successful meta.json write (e.g. the PostgreSQL mirror). Listener errors never fail the write. */
  onWrite(listener: MetaListener): void {
    this.listeners.push(listener);
  }

  dir(videoId: string): string {
    if (!isVideoId(videoId)) throw new NotFoundError('no such video');
    return path.join(this.videoDir, videoId);
  }

  metaPath(videoId: string): string {
    return path.join(this.dir(videoId), 'meta.json');
  }

  /** Read and verify meta.json; NotFoundError when the video does not exist. */
  async read(videoId: string): Promise<VideoMeta> {
    let raw: string;
    try {
      raw = await readFile(this.metaPath(videoId), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError('no such video');
      throw err;
    }
    return this.open(parseMeta(videoId, raw));
  }

  /** A verified stored document as callers see it: its sealed fields opened (when this store has the keys). */
  async open(meta: VideoMeta): Promise<VideoMeta> {
    if (!meta.sealed || !this.keys) return meta;
    const dataKey = await this.keys.dataKey(meta.videoId);
    if (!dataKey) return meta; // shredded: the sealed fields are unreadable for good
    const { sealed, ...rest } = meta;
    return { ...rest, ...openFields(deriveKey(dataKey, 'meta'), meta.videoId, sealed) };
  }

  /** The document as stored: PHI sealed when the video has a key (an empty filename and metadata need no sealing). */
  private async seal(meta: VideoMeta): Promise<VideoMeta> {
    if (meta.sealed || !this.keys || (meta.filename === '' && Object.keys(meta.metadata).length === 0)) return meta;
    const dataKey = await this.keys.dataKey(meta.videoId);
    if (!dataKey) return meta;
    return { ...meta, filename: '', metadata: {}, sealed: sealFields(deriveKey(dataKey, 'meta'), meta.videoId, meta) };
  }

  /** Write meta.json crash-safely (stamps updatedAt and metaChecksum), then invalidate caches. */
  async write(meta: VideoMeta): Promise<VideoMeta> {
    const { metaChecksum: _old, ...doc } = { ...meta, updatedAt: new Date().toISOString() };
    const stored = await this.seal(doc);
    const checksum = metaChecksum(stored);
    await mkdir(this.dir(meta.videoId), { recursive: true });
    await writeFileAtomic(this.metaPath(meta.videoId), `${JSON.stringify({ ...stored, metaChecksum: checksum }, null, 2)}\n`, `meta.tmp.${randomBytes(4).toString('hex')}.json`);
    await this.redis?.del(metaCacheKey(meta.videoId)).catch(() => undefined);
    const stamped: VideoMeta = { ...doc, metaChecksum: checksum };
    for (const listener of this.listeners) {
      try {
        await listener(stamped);
      } catch {
        // Listeners (mirrors, caches) are best-effort by contract; they count their own failures.
      }
    }
    return stamped;
  }

  /**
   * Read-modify-write under a short Redis lock per video, so a progress update
   * and a status change from two processes cannot overwrite each other.
   */
  async update(videoId: string, change: (meta: VideoMeta) => VideoMeta | Promise<VideoMeta>): Promise<VideoMeta> {
    const release = await this.lock(videoId);
    try {
      return await this.write(await change(await this.read(videoId)));
    } finally {
      await release();
    }
  }

  /**
   * The video's meta.json lock (what `update` holds): waits up to `waitMs`, then 503 `busy`.
   * Returns the release. Without Redis (single-process tools) there is nothing to lock.
   */
  async lock(videoId: string, waitMs = META_LOCK_MS): Promise<() => Promise<void>> {
    if (!this.redis) return async () => {};
    const lease = new RedisLease(this.redis, metaLockKey(videoId), { ttlMs: META_LOCK_MS });
    const deadline = Date.now() + waitMs;
    // Holders keep it for one read-change-fsync (a few ms): retry soon, then back off to 20 ms.
    // A flat 20 ms made the transcoder's start wait out finalize's `queued` write (bench 6: p50 11 → 32 ms).
    for (let pause = 2; !(await lease.tryAcquire()); pause = Math.min(pause * 2, 20)) {
      if (Date.now() >= deadline) throw new AppError(503, 'busy', 'metadata is being updated; retry');
      await new Promise((r) => setTimeout(r, pause));
    }
    return async () => {
      await lease.release();
    };
  }
}

export function parseMeta(videoId: string, raw: string): VideoMeta {
  let meta: VideoMeta;
  try {
    meta = JSON.parse(raw) as VideoMeta;
  } catch {
    throw new MetaCorruptError(videoId, 'not valid JSON');
  }
  if (typeof meta !== 'object' || meta === null || meta.videoId !== videoId) throw new MetaCorruptError(videoId, 'wrong document');
  if (exceededJsonBound(meta, META_JSON_BOUNDS)) throw new MetaCorruptError(videoId, 'nested too deeply or too large');
  if (meta.metaChecksum !== checksumWithinBounds(meta)) throw new MetaCorruptError(videoId, 'checksum mismatch');
  return meta;
}
