/**
 * A fanned-out transcode in the real local stack (gateway, queue connector, two
 * transcoder replicas, Redis, ffmpeg): a replica killed mid-chunk costs that
 * chunk only; a chunk that cannot succeed fails the video with the reason.
 */
import { readdirSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditLog } from '../shared/audit/client.js';
import type { Redis } from '../shared/platform/redis.js';
import { CHUNKS_DIR, chunkFile } from '../shared/transcode/fanout.js';
import { DEAD_LETTER_STREAM, TRANSCODE_STREAM, queueStats } from '../shared/transcode/queue.js';
import { enqueueTranscode } from '../shared/transcode/job.js';
import type { MediaStore } from '../shared/video/store.js';
import { expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { parentPid, pidsWith } from './helpers/processes.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { stackClients, type StackClients } from './helpers/stack-clients.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const CHUNKS = 3;
let stack: TestStack;
let redis: Redis;
let store: MediaStore;
let audit: AuditLog;
let transcodeEntries: StackClients['transcodeEntries'];
let untilStatus: StackClients['untilStatus'];
let clip: string;

const actionsOf = (videoId: string) => transcodeEntries(videoId).map((e) => e.action);

beforeAll(async () => {
  stack = await startStack({
    env: {
      LOCAL_REPLICAS: 'transcoder=2',
      TRANSCODE_CONCURRENCY: '2',
      RENDITIONS: '240p,360p,720p',
      // 4 s chunks taking a few seconds each on one thread: long enough to kill one mid-encode.
      TRANSCODE_CHUNK_SEGMENTS: '2',
      FFMPEG_PRESET: 'veryfast',
      FFMPEG_THREADS: '1',
      TRANSCODE_LEASE_SECONDS: '5',
      TRANSCODE_RETRY_BASE_SECONDS: '1',
      TRANSCODE_MAX_ATTEMPTS: '2',
    },
  });
  ({ redis, store, audit, transcodeEntries, untilStatus } = stackClients(stack));
  // moov first: a truncated copy still probes with its full duration (the failure test).
  clip = await makeClip(path.join(stack.mediaRoot, 'clip.mp4'), { seconds: CHUNKS * 4, width: 1280, height: 720, extra: ['-movflags', '+faststart'] });
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await audit?.close();
  await stack?.stop();
});

describe('fan-out across transcoder replicas (local stack)', () => {
  it('redoes only the chunk whose transcoder was killed, and completes the video', async () => {
    const video = await addVideo(store, clip);
    await enqueueTranscode(redis, video.videoId, null, { store, audit });
    // The ffmpeg of some chunk that is being encoded, and the replica running it.
    const [ffmpeg, index] = await waitFor(
      () => {
        for (let n = 0; n < CHUNKS; n++) {
          const [pid] = pidsWith(video.videoId, `${CHUNKS_DIR}/${n}.tmp-`);
          if (pid) return [pid, n] as const;
        }
        return null;
      },
      60_000,
      'a chunk encode to run',
      50,
    );
    const replica = parentPid(ffmpeg)!;
    const chunksDir = path.join(store.dir(video.videoId), CHUNKS_DIR);
    /** Finished chunk files and their inodes (none once the join has published and removed them). */
    const finished = () => {
      try {
        return new Map(readdirSync(chunksDir).filter((n) => /^\d+\.mp4$/.test(n)).map((n) => [n, statSync(path.join(chunksDir, n)).ino]));
      } catch {
        return new Map<string, number>();
      }
    };
    process.kill(replica, 'SIGKILL');
    const before = finished();
    expect(before.has(`${index}.mp4`)).toBe(false);

    // A chunk redone would be a new file (written aside, renamed over): its inode would change.
    const seen = new Map(before);
    const rewritten: string[] = [];
    await waitFor(
      async () => {
        for (const [n, ino] of finished()) {
          if (seen.has(n) && seen.get(n) !== ino) rewritten.push(n);
          seen.set(n, ino);
        }
        return (await store.read(video.videoId)).status === 'transcoded';
      },
      180_000,
      'the video to be transcoded',
      100,
    );
    expect(rewritten).toEqual([]);

    // The status is written on publish; the transcode.complete entry follows it into the audit log.
    await waitFor(() => actionsOf(video.videoId).includes('transcode.complete'), 20_000, 'the transcode.complete audit entry');
    const actions = actionsOf(video.videoId);
    // Every chunk once, plus the killed one again; one join, one publish.
    expect(actions.filter((a) => a === 'transcode.chunk.start')).toHaveLength(CHUNKS + 1);
    expect(actions.filter((a) => a === 'transcode.chunk.complete')).toHaveLength(CHUNKS);
    expect(actions.filter((a) => a === 'transcode.retry')).toHaveLength(1);
    expect(actions.filter((a) => a === 'transcode.join')).toHaveLength(1);
    expect(actions.filter((a) => a === 'transcode.complete')).toHaveLength(1);
    expectValidLadder(store.dir(video.videoId), { sourceDuration: video.duration!, hasAudio: true });
    await waitFor(() => pidsWith(video.videoId).length === 0, 10_000, 'no process working on the video');
    await waitFor(async () => (await queueStats(redis)).inFlight === 0 && (await redis.xlen(TRANSCODE_STREAM)) === 0, 30_000, 'every part to be acked');
  });

  it('fails the video with the failing chunk as the reason, and publishes nothing', async () => {
    const video = await addVideo(store, clip);
    // Half the original's bytes: the header still promises 12 s, the chunks past the cut cannot be encoded.
    const original = path.join(store.dir(video.videoId), 'original.mp4');
    truncateSync(original, Math.floor(statSync(original).size / 2));
    const deadBefore = await redis.xlen(DEAD_LETTER_STREAM);
    await enqueueTranscode(redis, video.videoId, null, { store, audit });

    await untilStatus(video.videoId, 'failed', 120_000);
    const meta = await store.read(video.videoId);
    expect(meta.failureReason).toMatch(/^chunk [12]: chunk_incomplete \(HTTP 422, attempt 2 of 2\)$/);
    expect(await redis.xlen(DEAD_LETTER_STREAM)).toBeGreaterThan(deadBefore);
    expect(readdirSync(store.dir(video.videoId))).not.toContain('hls');
    const actions = actionsOf(video.videoId);
    expect(actions).toContain('transcode.failed');
    expect(actions).not.toContain('transcode.join');
    // A chunk still encoding when the video failed finishes (a requeue with the same plan keeps it); no half-written chunk stays.
    await waitFor(() => readdirSync(path.join(store.dir(video.videoId), CHUNKS_DIR)).every((n) => !n.includes('.tmp-')), 60_000, 'no chunk being written');
    expect(statSync(chunkFile(store.dir(video.videoId), 0)).size).toBeGreaterThan(0);
    await waitFor(() => pidsWith(video.videoId).length === 0, 10_000, 'no process working on the video');
  });
});
