/**
 * A video directory as finalize leaves it: the original plus meta.json with status
 * `uploaded`. Without a clip, only meta.json (for tests that never transcode).
 */
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, rename } from 'node:fs/promises';
import path from 'node:path';
import { encryptFile } from '../../shared/crypto/chunked.js';
import { deriveKey } from '../../shared/keys/video-keys.js';
import { MediaStore, type VideoMeta } from '../../shared/video/store.js';
import { probe } from '../../shared/video/probe.js';

export async function addVideo(store: MediaStore, clip: string | null, overrides: Partial<VideoMeta> = {}): Promise<VideoMeta> {
  const videoId = randomUUID();
  await mkdir(store.dir(videoId), { recursive: true });
  const original = 'original.mp4';
  if (clip) await copyFile(clip, path.join(store.dir(videoId), original));
  const p = clip ? await probe(clip).catch(() => null) : null;
  const now = new Date().toISOString();
  return store.write({
    videoId,
    filename: 'clinic-visit.mp4',
    owner: null,
    status: 'uploaded',
    uploadedAt: now,
    updatedAt: now,
    original,
    size: 0,
    checksum: 'sha256:test',
    duration: p?.duration ?? null,
    width: p?.width ?? null,
    height: p?.height ?? null,
    fps: p?.fps ?? null,
    videoCodec: p?.videoCodec ?? null,
    audioCodec: p?.audioCodec ?? null,
    bitrate: p?.bitrate ?? null,
    renditions: [],
    metadata: {},
    ...overrides,
  });
}

/** The same as finalize leaves it in a vault with a KEK (the store's keys): a data key made, the original sealed, `encrypted`. */
export async function addEncryptedVideo(store: MediaStore, clip: string, overrides: Partial<VideoMeta> = {}): Promise<VideoMeta> {
  if (!store.keys) throw new Error('the store has no keys (MEDIA_KEK)');
  const meta = await addVideo(store, clip, overrides);
  const dataKey = await store.keys.create(meta.videoId);
  const original = path.join(store.dir(meta.videoId), meta.original);
  const { checksum, size } = await encryptFile(original, `${original}.sealing`, deriveKey(dataKey, 'original'), meta.videoId);
  await rename(`${original}.sealing`, original);
  return store.write({ ...meta, checksum, size, encrypted: true });
}
