/** A small real video (ffmpeg lavfi) with HLS and DASH renditions, written into a video dir as the transcoder would. */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { MediaStore, type VideoMeta } from '../../shared/video/store.js';
import { makeClip } from './media.js';

const run = promisify(execFile);

export async function makeVideo(videoDir: string, fields: Partial<VideoMeta> = {}, { seconds = 3 } = {}): Promise<{ videoId: string; dir: string; meta: VideoMeta }> {
  const videoId = randomUUID();
  const store = new MediaStore(videoDir);
  const dir = store.dir(videoId);
  await mkdir(path.join(dir, 'hls'), { recursive: true });
  await mkdir(path.join(dir, 'dash'), { recursive: true });
  const ff = (...args: string[]) => run('ffmpeg', ['-v', 'error', '-y', ...args], { cwd: dir });
  await makeClip(path.join(dir, 'original.mp4'), { seconds, extra: ['-movflags', '+faststart'] });
  await ff('-i', 'original.mp4', '-c', 'copy', '-f', 'hls', '-hls_time', '1', '-hls_segment_type', 'fmp4', '-hls_playlist_type', 'vod', '-hls_segment_filename', 'hls/240p_%03d.m4s', '-hls_fmp4_init_filename', '240p_init.mp4', 'hls/240p.m3u8');
  await ff('-i', 'original.mp4', '-c', 'copy', '-f', 'dash', '-seg_duration', '1', 'dash/manifest.mpd');
  await writeFile(path.join(dir, 'hls', 'master.m3u8'), '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x240\n240p.m3u8\n');
  const now = new Date().toISOString();
  const meta = await store.write({
    videoId,
    filename: 'PHI-patient-name.mp4',
    owner: 'owner-1',
    status: 'transcoded',
    uploadedAt: now,
    updatedAt: now,
    original: 'original.mp4',
    size: 0,
    checksum: 'sha256:00',
    duration: seconds,
    width: 320,
    height: 240,
    fps: 25,
    videoCodec: 'h264',
    audioCodec: 'aac',
    bitrate: null,
    renditions: ['240p'],
    metadata: { title: 'PHI-title', description: 'PHI-description' },
    outputs: { hlsMaster: 'hls/master.m3u8', dashManifest: 'dash/manifest.mpd' },
    ...fields,
  });
  return { videoId, dir, meta };
}
