/** GET /media/videos/:id/metadata|renditions through the stack, and the meta.json cache. */
import path from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/platform/log.js';
import { MediaStore, metaCacheKey } from '../shared/video/store.js';
import { MetadataReader } from '../shared/delivery/metadata-view.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startRedis } from './helpers/redis.js';
import { startStack, TEST_HMAC_SECRET, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

const JWT_SECRET = 'metadata-test-jwt-secret-0123456789abcdef01';
let stack: TestStack;
let video: { videoId: string; meta: { size: number } };
let other: { videoId: string };
const codec = createTokenCodec({ secret: TEST_HMAC_SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
const token = (videoId: string, scope = 'hls/') => codec.sign({ videoId, exp: Math.floor(Date.now() / 1000) + 120, scope });
const jwt = (sub: string, roles: string[] = []) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('2m').sign(new TextEncoder().encode(JWT_SECRET));

async function get(videoId: string, view: string, t: string | null, bearer?: string) {
  const res = await fetch(`${stack.url}/media/videos/${videoId}/${view}${t === null ? '' : `?token=${t}`}`, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET } });
  const videoDir = path.join(stack.mediaRoot, 'videos');
  [video, other] = await Promise.all([makeVideo(videoDir, { owner: 'owner-1' }), makeVideo(videoDir, { status: 'transcoding', progress: 40, renditions: [], outputs: {} })]);
}, STACK_START_DEADLINE_MS + 60_000);
afterAll(async () => {
  await stack?.stop();
});

describe('GET metadata and renditions', () => {
  it('opens with a token for any path of the video, without PHI', async () => {
    const res = await get(video.videoId, 'metadata', token(video.videoId, 'original.mp4'));
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ videoId: video.videoId, status: 'transcoded', uploadedAt: expect.any(String), size: video.meta.size, duration: 3, width: 320, height: 240, renditions: ['240p'], encrypted: false });
    const r = await get(video.videoId, 'renditions', token(video.videoId));
    expect(r.body).toEqual({ renditions: ['240p'], status: 'ready', masterPlaylist: 'hls/master.m3u8', dashManifest: 'dash/manifest.mpd' });
    const t = await get(other.videoId, 'renditions', token(other.videoId));
    expect(t.body).toEqual({ renditions: [], status: 'transcoding', masterPlaylist: null, dashManifest: null });
  });

  it('adds filename and user metadata only for the owner or an admin', async () => {
    const owner = await get(video.videoId, 'metadata', token(video.videoId), await jwt('owner-1', ['uploader']));
    expect(owner.body).toMatchObject({ filename: 'PHI-patient-name.mp4', metadata: { title: 'PHI-title' } });
    const admin = await get(video.videoId, 'metadata', token(video.videoId), await jwt('root', ['admin']));
    expect(admin.body.filename).toBe('PHI-patient-name.mp4');
    const stranger = await get(video.videoId, 'metadata', token(video.videoId), await jwt('someone', ['viewer']));
    expect(stranger.status).toBe(200);
    expect(JSON.stringify(stranger.body)).not.toContain('PHI');
    expect((await get(video.videoId, 'metadata', token(video.videoId), 'not-a-jwt')).status).toBe(401);
  });

  it('refuses missing, foreign and expired tokens with 403 and unknown videos with 404', async () => {
    expect((await get(video.videoId, 'metadata', null)).status).toBe(403);
    expect((await get(video.videoId, 'metadata', token(other.videoId))).status).toBe(403);
    const expired = codec.sign({ videoId: video.videoId, exp: Math.floor(Date.now() / 1000) - 100, scope: 'hls/' });
    expect((await get(video.videoId, 'renditions', expired)).body.error).toBe('token_expired');
    const ghost = '0b6f1c7e-3a52-4d0e-9f3a-6f1f2c3d4e5f';
    expect((await get(ghost, 'metadata', token(ghost))).status).toBe(404);
  });

  it('serves from the Redis cache and sees every meta.json write', async () => {
    const redis = stack.redis.client();
    await get(video.videoId, 'metadata', token(video.videoId));
    expect(await redis.exists(metaCacheKey(video.videoId))).toBe(1);
    const store = new MediaStore(path.join(stack.mediaRoot, 'videos'), redis);
    await store.update(video.videoId, (m) => ({ ...m, renditions: ['240p', '360p'] }));
    expect((await get(video.videoId, 'renditions', token(video.videoId))).body.renditions).toEqual(['240p', '360p']);
  });
});

describe('MetadataReader', () => {
  it('answers from disk while Redis is down and caches again once it is back', async () => {
    const redis = await startRedis();
    const client = redis.client();
    client.on('error', () => {});
    const videoDir = mkdtempSync(path.join(tmpdir(), 'pv-meta-'));
    const { videoId } = await makeVideo(videoDir);
    const reader = new MetadataReader(new MediaStore(videoDir, client), client, createLogger('test', 'error'));
    try {
      await redis.stop();
      await waitFor(() => client.status !== 'ready', 10_000, 'the client to notice');
      expect((await reader.read(videoId)).videoId).toBe(videoId);
      await redis.start();
      await waitFor(() => client.status === 'ready', 10_000, 'the client to reconnect');
      await reader.read(videoId);
      expect(await client.exists(metaCacheKey(videoId))).toBe(1);
      // A corrupted cache entry is caught by the checksum and replaced from disk, never served.
      await client.set(metaCacheKey(videoId), '{"videoId":"x"}');
      expect((await reader.read(videoId)).renditions).toEqual(['240p']);
      expect(JSON.parse((await client.get(metaCacheKey(videoId)))!).videoId).toBe(videoId);
    } finally {
      await redis.close();
    }
  });
});
