/**
 * Reading meta.json through its Redis cache, and the public views of it
 * (`GET /media/videos/:id/metadata` and `/renditions`).
 *
 * Cache protocol (key `metaCacheKey(id)`, raw meta.json text, TTL as a backstop):
 * MediaStore.write renames the new file into place and then deletes the key. A
 * reader that missed reads the file through one descriptor, stores the text, and
 * then checks that the path still names the inode it read; if not, a write raced
 * it and it deletes the key again. Either the writer's delete or the reader's
 * comes last, so a stale copy never outlives the write. When Redis is not
 * connected the cache is skipped and the disk answers.
 */
import { open, stat } from 'node:fs/promises';
import type { Logger } from '../platform/log.js';
import { metaCacheKey, parseMeta, type MediaStore, type VideoMeta } from '../video/store.js';
import { NotFoundError } from '../platform/errors.js';
import { renditionsStatus } from '../video/state.js';
import type { Redis } from '../platform/redis.js';

const CACHE_TTL_SECONDS = 3600;

export class MetadataReader {
  constructor(
    private readonly store: MediaStore,
    private readonly redis: Redis,
    private readonly log: Logger,
  ) {}

  async read(videoId: string): Promise<VideoMeta> {
    const key = metaCacheKey(videoId);
    const cacheUp = this.redis.status === 'ready';
    if (cacheUp) {
      const cached = await this.redis.get(key).catch(() => null);
      if (cached !== null) {
        // Verified like the file (checksum); a bad entry is dropped and the disk answers.
        try {
          return await this.store.open(parseMeta(videoId, cached));
        } catch {
          this.log.warn({ videoId }, 'cached meta.json failed its integrity check; reading the disk');
        }
      }
    }
    const file = this.store.metaPath(videoId);
    let text: string;
    let ino: bigint;
    try {
      const handle = await open(file, 'r');
      try {
        ino = (await handle.stat({ bigint: true })).ino;
        text = await handle.readFile('utf8');
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError('no such video');
      throw err;
    }
    const meta = await this.store.open(parseMeta(videoId, text));
    if (cacheUp) {
      try {
        await this.redis.set(key, text, 'EX', CACHE_TTL_SECONDS);
        const now = await stat(file, { bigint: true }).catch(() => null);
        if (now?.ino !== ino) await this.redis.del(key);
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'metadata cache unavailable');
      }
    }
    return meta;
  }
}

/**
 * `GET .../metadata`. `filename` and the user's `metadata` (title, description)
 * may be PHI: they are included only for callers allowed to manage the video.
 */
export function metadataView(meta: VideoMeta, includePrivate: boolean): Record<string, unknown> {
  return {
    videoId: meta.videoId,
    ...(includePrivate ? { filename: meta.filename } : {}),
    status: meta.status,
    ...(meta.status === 'transcoding' && meta.progress !== undefined ? { progress: meta.progress } : {}),
    // A fanned-out video plays early: its preview rung is ready before the ladder (docs/transcoding.md).
    ...(meta.status === 'transcoding' && meta.preview
      ? { renditionsReady: [meta.preview.rendition], preview: { hlsMaster: meta.preview.hlsMaster, dashManifest: meta.preview.dashManifest } }
      : {}),
    uploadedAt: meta.uploadedAt,
    size: meta.size,
    duration: meta.duration,
    width: meta.width,
    height: meta.height,
    renditions: meta.renditions,
    // Whether the original is stored encrypted at rest, and the renditions and images too (docs/hipaa.md).
    encrypted: meta.encrypted === true && meta.clearMedia !== true,
    // Relative to the video; a token for the master (scope hls/) opens them.
    ...(meta.status === 'transcoded' && meta.outputs?.poster ? { poster: meta.outputs.poster } : {}),
    ...(meta.status === 'transcoded' && meta.outputs?.thumbnails ? { thumbnails: meta.outputs.thumbnails } : {}),
    ...(includePrivate ? { metadata: meta.metadata } : {}),
    // Records facts for whoever manages the video, not for every token holder (a hold says a matter is open).
    ...(includePrivate ? { legalHold: meta.legalHold ?? null, retainUntil: meta.retainUntil ?? null } : {}),
  };
}

/** `GET .../renditions`. */
export function renditionsView(meta: VideoMeta): Record<string, unknown> {
  return {
    renditions: meta.renditions,
    status: renditionsStatus(meta.status),
    masterPlaylist: meta.outputs?.hlsMaster ?? null,
    dashManifest: meta.outputs?.dashManifest ?? null,
  };
}
