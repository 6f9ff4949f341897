/** `pulsevault requeue` as an operator runs it: a real process over a real VIDEO_DIR and Redis. */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../shared/audit/client.js';
import { loadConfig } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import type { Redis } from '../shared/platform/redis.js';
import { TRANSCODE_STREAM } from '../shared/transcode/queue.js';
import { enqueueTranscode } from '../shared/transcode/job.js';
import { makeClip } from './helpers/media.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { startAuditWriter } from './helpers/audit.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);

async function requeue(mediaRoot: string, redisUrl: string): Promise<Record<string, number>> {
  const { stdout } = await run(process.execPath, ['dist/scripts/pulsevault.js', 'requeue'], {
    env: { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: mediaRoot, REDIS_URL: redisUrl, LOG_LEVEL: 'error', SECRETS_DIR: path.join(mediaRoot, 'none') },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number>;
}

describe('pulsevault requeue (no connector running)', () => {
  let server: TestRedis;
  let redis: Redis;
  let store: MediaStore;
  let writer: { stop(): Promise<void> };
  const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-requeue-'));

  beforeAll(async () => {
    server = await startRedis();
    redis = server.client();
    store = new MediaStore(path.join(mediaRoot, 'videos'), redis);
    // Requeue audits each video it queues; the real writer makes those entries durable.
    writer = await startAuditWriter(server.url, path.join(mediaRoot, 'audit'));
  });
  afterAll(async () => {
    await writer.stop();
    await server.close();
    rmSync(mediaRoot, { recursive: true, force: true });
  });

  it('queues exactly the videos without a published ladder, and a second run adds nothing', async () => {
    const make = async (status: VideoMeta['status'], published: boolean) => {
      const v = await addVideo(store, null, { status });
      if (published) {
        mkdirSync(path.join(store.dir(v.videoId), 'hls'));
        writeFileSync(path.join(store.dir(v.videoId), 'hls', 'master.m3u8'), '#EXTM3U\n');
      }
      return v;
    };
    const upToDate = await Promise.all(Array.from({ length: 30 }, () => make('transcoded', true)));
    const restored = await Promise.all(Array.from({ length: 10 }, () => make('transcoded', false)));
    const uploaded = await Promise.all(Array.from({ length: 10 }, () => make('uploaded', false)));
    const failed = await Promise.all(Array.from({ length: 5 }, () => make('failed', false)));
    // Already queued by finalize: counted, not queued twice.
    const queued = await make('uploaded', false);
    const log = createLogger('test', 'error');
    const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: mediaRoot, REDIS_URL: server.url }, { secretsDir: path.join(mediaRoot, 'none') });
    const audit = createAuditLog(config, redis, log);
    await enqueueTranscode(redis, queued.videoId, null, { store, audit });
    await audit.close();
    // Not videos: an interrupted finalize (no meta.json) and a stray directory.
    mkdirSync(path.join(store.videoDir, '7d3c1f7e-5b0a-4c8e-9f00-000000000001'));
    mkdirSync(path.join(store.videoDir, 'lost+found'));

    const first = await requeue(mediaRoot, server.url);
    expect(first).toMatchObject({ scanned: 57, enqueued: 25, alreadyQueued: 1, upToDate: 30, noMeta: 1, errors: 0 });
    expect(await redis.xlen(TRANSCODE_STREAM)).toBe(26);
    for (const v of [...restored, ...uploaded, ...failed]) expect((await store.read(v.videoId)).status).toBe('queued');
    for (const v of upToDate) expect((await store.read(v.videoId)).status).toBe('transcoded');

    const second = await requeue(mediaRoot, server.url);
    expect(second).toMatchObject({ enqueued: 0, alreadyQueued: 26, upToDate: 30 });
    expect(await redis.xlen(TRANSCODE_STREAM)).toBe(26);
  });
});

describe('pulsevault requeue with the stack running', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ env: { RENDITIONS: '240p', FFMPEG_PRESET: 'ultrafast', TRANSCODE_LEASE_SECONDS: '5' } });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
  });

  it('re-creates a deleted hls/ (restore without renditions)', async () => {
    const redis = stack.redis.client();
    const store = new MediaStore(path.join(stack.mediaRoot, 'videos'), redis);
    const clip = await makeClip(path.join(stack.mediaRoot, 'clip.mp4'), { seconds: 2 });
    const video = await addVideo(store, clip, { status: 'transcoded' });
    expect(await requeue(stack.mediaRoot, stack.redis.url)).toMatchObject({ enqueued: 1 });
    await waitFor(async () => (await store.read(video.videoId)).status === 'transcoded' && existsSync(path.join(store.dir(video.videoId), 'hls', 'master.m3u8')), 60_000, 'first transcode');

    rmSync(path.join(store.dir(video.videoId), 'hls'), { recursive: true });
    expect(await requeue(stack.mediaRoot, stack.redis.url)).toMatchObject({ enqueued: 1 });
    await waitFor(() => existsSync(path.join(store.dir(video.videoId), 'hls', 'master.m3u8')), 60_000, 'hls/ to be re-created');
    await waitFor(async () => (await store.read(video.videoId)).status === 'transcoded', 10_000, 'status transcoded');
    expect(await requeue(stack.mediaRoot, stack.redis.url)).toMatchObject({ enqueued: 0, upToDate: 1 });
  });
});
