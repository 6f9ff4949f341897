/** Watching a video's status the way the issue documents it: meta.json through MediaStore.read. */
import { MediaStore, type VideoMeta } from '../../shared/video/store.js';
import type { VideoStatus } from '../../shared/video/state.js';

/** Poll meta.json every `intervalMs` until its status is one of `statuses`; rejects on `failed` or at the deadline. */
export async function waitForStatus(videoDir: string, videoId: string, statuses: VideoStatus[], timeoutMs: number, intervalMs = 50): Promise<VideoMeta> {
  const store = new MediaStore(videoDir);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const meta = await store.read(videoId);
    if (statuses.includes(meta.status)) return meta;
    if (meta.status === 'failed') throw new Error(`video ${videoId} failed: ${meta.failureReason ?? 'no reason given'}`);
    if (Date.now() > deadline) throw new Error(`video ${videoId} still ${meta.status} after ${timeoutMs} ms (waiting for ${statuses.join(' or ')})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
