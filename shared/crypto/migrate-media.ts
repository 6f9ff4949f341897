/**
 * The published media of a video encrypted in place (./migrate.ts), brought to what a transcode
 * under its data key would have published: sealed images (./images.ts) and CENC renditions
 * (shared/transcode/encrypt-renditions.ts), while players that loaded the clear ones keep playing.
 *
 * Images keep their names (a page fetches `poster.jpg`, a thumbnail plug-in the sheets a cue
 * names) and the function decrypts them, so one is sealed by rename where it is:
 *
 *   IMAGES_SEALING_MARK (nginx hands the directory's images to the function, which decides per
 *   opened file) → the grace (a request nginx let through just before the mark opens its file
 *   first) → each image sealed by rename → IMAGES_SEALED_MARK → the sealing mark removed
 *
 * A player fetches a VOD playlist once and then its segments by name, so the encrypted segments
 * get new names (GENERATION_DIR, a directory of the rendition directory: `hls/cenc/seg_0_00001.m4s`)
 * and the clear ones stay until every token that could have loaded a clear playlist has expired:
 *
 *   work directory (`hls/.encrypting`, redone by a rerun): hard links of the segments and playlists
 *   (encryptRenditions replaces files by rename: the published inodes never change), encrypted, the
 *   segments moved into GENERATION_DIR, the playlists pointed at it, fsynced → under the meta lock: GENERATION_DIR renamed in → each playlist renamed over the published one → the
 *   retirement mark (its deadline: now + the retirement grace) → the work directory removed
 *   … the retirement grace (a token's life and the edge's grant cache, which lasts no longer) …
 *   under the meta lock: the clear segments removed → the retirement mark removed
 *
 * One audit entry (`video.media_encrypted`) per run that changes anything, durable before the first
 * change. meta.json's `clearMedia` says, from the original's switch until the last clear file is gone,
 * that the folder still holds clear media (`GET …/metadata` then answers `encrypted: false`).
 * The preview directory of a fanned-out video, when it is still there, gets the same treatment.
 * The master playlist names the media playlists, which keep their names: it is not rewritten.
 *
 * A kill at any point leaves the published media whole (clear, encrypted, or clear and encrypted
 * side by side) and a state the rerun finishes from: the marks and directories say which.
 */
import { link, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import type { AuditLog } from '../audit/client.js';
import { rewriteM3u8, rewriteMpd } from '../delivery/playlist-rewrite.js';
import { renditionKey, type VideoKeys } from '../keys/video-keys.js';
import { fsyncDir, fsyncFile, writeFileAtomic } from '../platform/atomic-file.js';
import type { Config } from '../platform/config.js';
import { UnprocessableError } from '../platform/errors.js';
import { exists } from '../platform/exists.js';
import type { Redis } from '../platform/redis.js';
import { encryptRenditions } from '../transcode/encrypt-renditions.js';
import { MANIFEST_NAME } from '../transcode/ffmpeg-command.js';
import { MASTER_NAME } from '../transcode/playlists.js';
import { OUTPUT_DIR, PREVIEW_DIR } from '../transcode/transcoder.js';
import type { MediaStore } from '../video/store.js';
import { CencError, isEncryptedInit } from './cenc.js';
import { imagesIn, IMAGES_SEALED_MARK, IMAGES_SEALING_MARK, sealImages } from './images.js';
import { isGone, isTranscoding, OPERATOR } from './migrate-guards.js';

/** Points right after each durable step, in order (the crash tests kill the process there). */
export const MEDIA_STEPS = [
  'after-media-audit',
  'after-images-mark',
  'after-image-sealed',
  'after-images-sealed',
  'after-renditions-work',
  'after-generation',
  'after-playlist',
  'after-playlists',
  'after-retire',
] as const;
export type MediaStep = (typeof MEDIA_STEPS)[number];

/** Where a migrated rendition directory keeps its encrypted segments (a media path's directory). */
export const GENERATION_DIR = 'cenc';
/** The re-packaging's work directory, inside the rendition directory (a dot-directory: never served). */
const WORK_DIR = '.encrypting';
/** Beside clear segments replaced by GENERATION_DIR: when they may go (epoch ms). */
export const RETIRE_MARK = '.clear-retiring';
/**
 * The retirement grace: a player may have loaded a clear playlist until the switch, under a token that
 * lasts TOKEN_EXPIRY_SECONDS at most, checked with TOKEN_CLOCK_SKEW_SECONDS either way (a signer's
 * clock ahead, the expiry's leeway); the edge caches a grant no longer than its token. 30 s to spare.
 */
export const retireGraceMs = (config: Pick<Config, 'tokenExpirySeconds' | 'tokenClockSkewSeconds'>) => (config.tokenExpirySeconds + 2 * config.tokenClockSkewSeconds) * 1000 + 30_000;
/** The directories a transcode publishes renditions in. */
const RENDITION_DIRS = [OUTPUT_DIR, PREVIEW_DIR];

export interface MediaDeps {
  store: MediaStore;
  keys: VideoKeys;
  redis: Redis;
  audit: AuditLog;
  onStep?: (step: MediaStep) => void;
  /** Between the sealing mark and the first seal (as the original's switch grace). */
  switchGraceMs: number;
  /** Between the playlists' switch and the removal of the clear segments. */
  retireGraceMs: number;
}

export type MediaOutcome = 'encrypted' | 'already' | 'busy' | 'deleted';
export interface MediaResult {
  outcome: MediaOutcome;
  /** When the clear segments left may be removed (the next run's to do), or null when none are left. */
  retireAt: number | null;
}

const isSegment = (name: string) => /^(init_\d+|seg_\d+_\d+)\.m4s$/.test(name);
/** Media playlists and the manifest: what names segments. */
const isPlaylist = (name: string) => name === MANIFEST_NAME || (name.endsWith('.m3u8') && name !== MASTER_NAME);
/** A segment's name as the re-packaged playlists give it (templates included: `init_$RepresentationID$.m4s`). */
const inGeneration = (uri: string) => (/^[^/:?#]+$/.test(uri) ? `${GENERATION_DIR}/${uri}` : uri);

async function listOrNone(dir: string): Promise<string[] | null> {
  return readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
}

/** Clear segments published as the transcode wrote them (not re-packaged yet). */
async function hasClearLadder(dir: string, names: string[]): Promise<boolean> {
  const init = names.find((n) => /^init_\d+\.m4s$/.test(n));
  return init !== undefined && !(await exists(path.join(dir, GENERATION_DIR))) && !isEncryptedInit(await readFile(path.join(dir, init)));
}

/** What is left of a rendition directory's migration: changes to the published files, the removal of its clear segments, or nothing. */
async function stateOf(dir: string): Promise<'clear' | 'retiring' | 'done'> {
  const names = await listOrNone(dir);
  if (!names) return 'done';
  if (names.includes(WORK_DIR) || names.includes(IMAGES_SEALING_MARK)) return 'clear';
  if (!names.includes(IMAGES_SEALED_MARK) && (await imagesIn(dir)).length > 0) return 'clear';
  if (await hasClearLadder(dir, names)) return 'clear';
  return names.includes(RETIRE_MARK) ? 'retiring' : 'done';
}

const statesOf = (folder: string) => Promise.all(RENDITION_DIRS.map((name) => stateOf(path.join(folder, name))));

/** Whether any file of the folder's published media is still clear (or a step towards it unfinished). */
export async function clearMediaLeft(folder: string): Promise<boolean> {
  return (await statesOf(folder)).some((s) => s !== 'done');
}

/** `fn` under the video's meta lock, unless it was deleted or is being transcoded meanwhile. */
async function whileUntouched<T>(d: MediaDeps, videoId: string, fn: () => Promise<T>): Promise<T | 'busy' | 'deleted'> {
  const release = await d.store.lock(videoId);
  try {
    const meta = await d.store.read(videoId);
    if (await isGone(d.store, meta)) return 'deleted';
    if (await isTranscoding(d.redis, meta)) return 'busy';
    return await fn();
  } finally {
    await release();
  }
}

/** The directory's images sealed where they are; whether anything was left to do. */
async function sealInPlace(d: MediaDeps, videoId: string, dir: string, dataKey: Buffer): Promise<boolean> {
  const sealing = path.join(dir, IMAGES_SEALING_MARK);
  if (await exists(path.join(dir, IMAGES_SEALED_MARK))) {
    if (!(await exists(sealing))) return false;
  } else {
    if ((await imagesIn(dir)).length === 0) return false;
    await writeFileAtomic(sealing, '');
    d.onStep?.('after-images-mark');
    await sleep(d.switchGraceMs);
    await sealImages(dir, videoId, dataKey, () => d.onStep?.('after-image-sealed'));
    d.onStep?.('after-images-sealed');
  }
  await rm(sealing, { force: true });
  return true;
}

/** The work directory, made anew: the directory's segments encrypted into GENERATION_DIR, its playlists pointing there. */
async function repackage(dir: string, names: string[], videoId: string, dataKey: Buffer): Promise<void> {
  const work = path.join(dir, WORK_DIR);
  await rm(work, { recursive: true, force: true });
  await mkdir(path.join(work, GENERATION_DIR), { recursive: true, mode: 0o750 });
  for (const name of names.filter((n) => isSegment(n) || isPlaylist(n))) await link(path.join(dir, name), path.join(work, name));
  try {
    await encryptRenditions(work, videoId, renditionKey(dataKey));
  } catch (err) {
    if (!(err instanceof CencError)) throw err;
    // Every run would fail alike (an AV1 ladder, docs/transcoding.md): a re-transcode under the key is the way.
    await rm(work, { recursive: true, force: true });
    throw new UnprocessableError(`the renditions cannot be encrypted: ${err.message}`, 'renditions_not_encryptable');
  }
  for (const name of names.filter(isSegment)) {
    const moved = path.join(work, GENERATION_DIR, name);
    await rename(path.join(work, name), moved);
    await fsyncFile(moved);
  }
  await fsyncDir(path.join(work, GENERATION_DIR));
  for (const name of names.filter(isPlaylist)) {
    const file = path.join(work, name);
    const text = await readFile(file, 'utf8');
    await writeFileAtomic(file, name === MANIFEST_NAME ? rewriteMpd(text, inGeneration) : rewriteM3u8(text, inGeneration));
  }
}

/** Under the lock: GENERATION_DIR in, the playlists over the clear ones, the retirement mark, the work directory gone. */
async function switchPlaylists(d: MediaDeps, dir: string): Promise<void> {
  const work = path.join(dir, WORK_DIR);
  const generation = path.join(dir, GENERATION_DIR);
  if (!(await exists(generation))) {
    await rename(path.join(work, GENERATION_DIR), generation);
    await fsyncDir(dir);
    d.onStep?.('after-generation');
  }
  for (const name of (await readdir(work)).filter(isPlaylist)) {
    await rename(path.join(work, name), path.join(dir, name));
    d.onStep?.('after-playlist');
  }
  await fsyncDir(dir);
  // A rerun after a kill past this point keeps the first deadline.
  const mark = path.join(dir, RETIRE_MARK);
  if (!(await exists(mark))) await writeFileAtomic(mark, String(Date.now() + d.retireGraceMs));
  await rm(work, { recursive: true, force: true });
  d.onStep?.('after-playlists');
}

/** Under the lock: the clear segments the playlists no longer name removed, once the deadline has passed; the deadline otherwise. */
async function retire(d: MediaDeps, dir: string): Promise<number | null> {
  const mark = path.join(dir, RETIRE_MARK);
  const at = Number(await readFile(mark, 'utf8'));
  if (Date.now() < at) return at;
  // With GENERATION_DIR in place, the segments beside it are the clear ones (a new transcode publishes a directory without it).
  for (const name of (await readdir(dir)).filter(isSegment)) await rm(path.join(dir, name), { force: true });
  await fsyncDir(dir);
  d.onStep?.('after-retire');
  await rm(mark, { force: true });
  return null;
}

/**
 * Seal the images and re-package the renditions of a video whose original is encrypted; remove the
 * clear segments whose grace has passed. Crash-safe and idempotent: call it again to finish.
 */
export async function encryptMedia(d: MediaDeps, videoId: string): Promise<MediaResult> {
  const folder = d.store.dir(videoId);
  const before = await d.store.read(videoId);
  if (await isGone(d.store, before)) return { outcome: 'deleted', retireAt: null };
  if (await isTranscoding(d.redis, before)) return { outcome: 'busy', retireAt: null };
  const states = await statesOf(folder);
  if (states.every((s) => s === 'done')) {
    if (before.clearMedia) await d.store.update(videoId, ({ clearMedia: _, ...meta }) => meta);
    return { outcome: 'already', retireAt: null };
  }
  const dataKey = await d.keys.dataKey(videoId);
  if (!dataKey) throw new Error('encryptMedia: the video has no data key (its original is not encrypted)');
  if (!before.clearMedia) await d.store.update(videoId, (meta) => ({ ...meta, clearMedia: true }));
  if (states.includes('clear')) {
    // Before any published file changes (a crash after it repeats it); not for a removal of clear segments alone.
    await d.audit.record({ category: 'admin', action: 'video.media_encrypted', outcome: 'success', actor: OPERATOR, videoId });
    d.onStep?.('after-media-audit');
  }

  let retireAt: number | null = null;
  for (const name of RENDITION_DIRS) {
    const dir = path.join(folder, name);
    const names = await listOrNone(dir);
    if (!names) continue;
    await sealInPlace(d, videoId, dir, dataKey);
    if (await hasClearLadder(dir, names)) {
      await repackage(dir, names, videoId, dataKey);
      d.onStep?.('after-renditions-work');
    }
    if (await exists(path.join(dir, WORK_DIR))) {
      const switched = await whileUntouched(d, videoId, () => switchPlaylists(d, dir));
      if (switched === 'busy' || switched === 'deleted') return { outcome: switched, retireAt: null };
    }
    if (await exists(path.join(dir, RETIRE_MARK))) {
      const pending = await whileUntouched(d, videoId, () => retire(d, dir));
      if (pending === 'busy' || pending === 'deleted') return { outcome: pending, retireAt: null };
      if (pending !== null) retireAt = Math.min(retireAt ?? pending, pending);
    }
  }
  if (retireAt === null && !(await clearMediaLeft(folder))) await d.store.update(videoId, ({ clearMedia: _, ...meta }) => meta);
  return { outcome: 'encrypted', retireAt };
}
