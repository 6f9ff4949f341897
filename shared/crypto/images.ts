/**
 * A video's images at rest — the poster and the seek-thumbnail sprite sheets: with a data key they
 * are sealed in the original's format (./chunked.ts: AES-256-GCM in chunks, every tag checked) under
 * a key derived for 'image', in the transcoder's work directory before it is published. A mark
 * (IMAGES_SEALED_MARK), written after the last sealed image, is published with them by the same
 * rename, so a directory's images and its mark appear together.
 *
 * The mark decides, for nginx and the stream function alike: nginx (services/media-edge) hands
 * every image request of a marked directory to the function, which decrypts it (served as an
 * encrypted original is, ./original-response.ts); a directory without it keeps clear images that
 * nginx sends with sendfile. In a marked directory an image that is not whole ciphertext is an
 * integrity error, never bytes.
 *
 * Bound to the video (another video's image does not open), not to the name: sealed images move
 * within their directory unchanged, and one swapped for another of the same video still opens.
 *
 * Images published in the clear (a video encrypted in place, ./migrate-media.ts) are sealed where
 * they are, each by rename, under another mark (IMAGES_SEALING_MARK) for the while: nginx hands
 * their requests to the function as well, which decides per opened file by its magic, so each
 * answer is the same image, from the clear file or the sealed one.
 */
import { readdir, rename } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { MEDIA_TYPES } from '../delivery/media-path.js';
import { deriveKey, type VideoKeys } from '../keys/video-keys.js';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { exists } from '../platform/exists.js';
import { EncryptedFile, encryptFile, IntegrityError, isEncryptedFile, MissingKeyError, readEncryptedHeader } from './chunked.js';

/** Beside a directory's sealed images (a dot-file: never served). */
export const IMAGES_SEALED_MARK = '.images-encrypted';
/** Beside a published directory's images while they are sealed in place: some are still clear. */
export const IMAGES_SEALING_MARK = '.images-encrypting';

/** The served extensions that are images (MEDIA_TYPES' image/* types). */
export const IMAGE_EXTENSIONS = Object.keys(MEDIA_TYPES).filter((ext) => MEDIA_TYPES[ext]!.startsWith('image/'));
const isImage = (name: string) => IMAGE_EXTENSIONS.includes(path.extname(name).slice(1));

/** The images of `dir`, by name. */
export const imagesIn = async (dir: string) => (await readdir(dir)).filter(isImage);

/**
 * Seal every image in `dir` (a work directory, or a published one under IMAGES_SEALING_MARK), then
 * mark it; a directory without images gets no mark. Images already sealed are left as they are (a
 * sealing in place cut short is finished by sealing the rest). `onSealed`: after each image's rename.
 */
export async function sealImages(dir: string, videoId: string, dataKey: Buffer, onSealed?: () => void): Promise<void> {
  const images = await imagesIn(dir);
  if (images.length === 0) return;
  for (const name of images) {
    const file = path.join(dir, name);
    if (await isEncryptedFile(file)) continue;
    await sealImage(file, `${file}.seal.tmp`, videoId, dataKey);
    await rename(`${file}.seal.tmp`, file);
    onSealed?.();
  }
  await writeFileAtomic(path.join(dir, IMAGES_SEALED_MARK), '');
}

/**
 * The image `file` sealed into `target` (created and fsynced; the caller renames it into place).
 * Also a fanned-out transcode's chunk sheets (shared/transcode/fanout.ts), so the join's copies of
 * them are already what the publish would seal.
 */
export async function sealImage(file: string, target: string, videoId: string, dataKey: Buffer): Promise<void> {
  await encryptFile(file, target, deriveKey(dataKey, 'image'), videoId);
}

/**
 * The open file as a sealed image to decrypt, or null when it is served as it is (not an image, or
 * its directory has no mark, or it is still clear while its directory is sealed in place). `realPath`
 * is its path inside the video's folder (symlinks resolved).
 */
export async function sealedImage(keys: VideoKeys | null, videoDir: string, videoId: string, realPath: string, handle: FileHandle, fileSize: number): Promise<EncryptedFile | null> {
  if (!isImage(realPath)) return null;
  const dir = path.join(videoDir, videoId, path.dirname(realPath));
  const sealed = await exists(path.join(dir, IMAGES_SEALED_MARK));
  // The sealed mark comes last: until then an image is sealed or clear, and its magic says which.
  if (!sealed && !(await exists(path.join(dir, IMAGES_SEALING_MARK)))) return null;
  const header = await readEncryptedHeader(handle, fileSize);
  if (!header && !sealed) return null;
  const dataKey = keys ? await keys.dataKey(videoId) : null;
  if (!dataKey) throw new MissingKeyError();
  if (!header) throw new IntegrityError(null);
  return EncryptedFile.withHeader(handle, header, deriveKey(dataKey, 'image'), videoId);
}

/**
 * Whether the file at `realPath` is an image of a directory being sealed in place: one the function
 * found clear is sent from its open file, never handed to nginx, which reopens the path (by then
 * perhaps the sealed image under the same name).
 */
export async function sealingInPlace(videoDir: string, videoId: string, realPath: string): Promise<boolean> {
  return isImage(realPath) && exists(path.join(videoDir, videoId, path.dirname(realPath), IMAGES_SEALING_MARK));
}

/**
 * The sealed images of a video's folder (`hls/poster.jpg`, …), the scrub's list: every image of its
 * published, marked directories, and those already sealed in a directory being sealed in place
 * (its clear ones are the sealing's to do, not damage).
 */
export async function sealedImageFiles(folder: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    // Dot-directories are a transcode's work in progress (and `.chunks/`), not published.
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
    const names = await readdir(path.join(folder, entry.name));
    const images = names.filter(isImage).map((n) => `${entry.name}/${n}`);
    if (names.includes(IMAGES_SEALED_MARK)) found.push(...images);
    else if (names.includes(IMAGES_SEALING_MARK)) for (const image of images) if (await isEncryptedFile(path.join(folder, image))) found.push(image);
  }
  return found;
}
