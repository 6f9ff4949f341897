/**
 * The deleted mark: `VIDEO_DIR/<videoId>/.deleted`, written (atomically, fsynced) before the first
 * byte of a disposal is removed and never removed after. It is the disposal's one commit point:
 * every reader — the stream function (both of the media edge's paths), nginx's grant location
 * (services/media-edge/nginx-config.ts tests for the file itself), metadata, renditions, sign —
 * refuses a video that has it with 410 `video_deleted`, so a disposal interrupted at any step leaves
 * a video that is refused everywhere, and one not yet marked plays whole. A dot-file: never a media
 * path (shared/delivery/media-path.ts refuses dot-files).
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { AppError } from '../platform/errors.js';
import type { Deletion } from '../video/store.js';

export const DELETED_MARK = '.deleted';

export class VideoDeletedError extends AppError {
  constructor() {
    super(410, 'video_deleted', 'this video was deleted');
  }
}

const markPath = (videoDir: string, videoId: string) => path.join(videoDir, videoId, DELETED_MARK);

export async function isDeleted(videoDir: string, videoId: string): Promise<boolean> {
  try {
    await access(markPath(videoDir, videoId));
    return true;
  } catch {
    return false;
  }
}

/** 410 `video_deleted` for a video with the deleted mark. `videoId` must already be a valid id. */
export async function refuseIfDeleted(videoDir: string, videoId: string): Promise<void> {
  if (await isDeleted(videoDir, videoId)) throw new VideoDeletedError();
}

/** The commit point of a disposal. It holds the deletion record, so a sweep can write the tombstone a crash did not. */
export async function writeDeletedMark(videoDir: string, videoId: string, deletion: Omit<Deletion, 'disposedAt'>): Promise<void> {
  await writeFileAtomic(markPath(videoDir, videoId), `${JSON.stringify(deletion)}\n`);
}
