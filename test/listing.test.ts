/** `GET /media/videos` listing logic: validation, access, keyset pagination, against a real PostgreSQL and against the media volume. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../shared/platform/errors.js';
import { MAX_SUBJECT_LENGTH } from '../shared/auth/jwt.js';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { MetadataMirror } from '../shared/mirror/mirror.js';
import { DEFAULT_LIMIT, listVideos, MAX_LIMIT, parseListingQuery, type ListingBody, type ListingCaller } from '../shared/delivery/video-listing.js';
import { freePort } from '../services/devstack/supervisor.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';

const admin: ListingCaller = { userId: 'user-root', roles: ['admin'] };
const alice: ListingCaller = { userId: 'user-alice', roles: ['uploader'] };

let db: TestDatabase;
let mirror: MetadataMirror;
/** No video is written here: a mirror, when given, is what the listing reads. */
const unusedStore = new MediaStore(path.join(tmpdir(), 'pv-listing-no-such-dir'));
const seeded: VideoMeta[] = [];

async function seed(meta: VideoMeta): Promise<VideoMeta> {
  const stamped = { ...meta, metaChecksum: `sha256:${meta.videoId}` };
  await mirror.mirror(stamped);
  seeded.push(stamped);
  return stamped;
}

/** Newest first, id breaking ties, as the listing orders. */
const byListingOrder = (a: VideoMeta, b: VideoMeta) => b.uploadedAt.localeCompare(a.uploadedAt) || b.videoId.localeCompare(a.videoId);

const list = (query: string, caller: ListingCaller = admin) => listVideos({ mirror, store: unusedStore }, parseListingQuery(new URLSearchParams(query)), caller);

/** Every page of `query` from `listPage`, following nextCursor. */
const pager =
  (listPage: (query: string, caller: ListingCaller) => Promise<ListingBody>) =>
  async (query: string, caller: ListingCaller = admin, between?: () => Promise<void>): Promise<ListingBody[]> => {
    const pages: ListingBody[] = [];
    let cursor: string | null = null;
    do {
      const page = await listPage(`${query}${cursor ? `&cursor=${cursor}` : ''}`, caller);
      pages.push(page);
      cursor = page.nextCursor;
      await between?.();
    } while (cursor);
    return pages;
  };
const allPages = pager(list);

async function statusOf(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AppError) return err.status;
    throw err;
  }
  throw new Error('expected an AppError');
}

beforeAll(async () => {
  db = await createTestDatabase();
  mirror = new MetadataMirror(db.dsn, false, memoryLogger().log);
  const statuses = ['uploaded', 'queued', 'transcoding', 'transcoded', 'failed'] as const;
  for (let i = 0; i < 12; i++) {
    // Pairs share an upload time, so pages must break ties by id.
    const uploadedAt = new Date(Date.UTC(2025, 0, 1, 0, Math.floor(i / 2))).toISOString();
    await seed(videoMeta({ owner: i % 3 === 0 ? 'user-bob' : 'user-alice', status: statuses[i % 5]!, uploadedAt, updatedAt: uploadedAt }));
  }
});

afterAll(async () => {
  await mirror?.close();
  await db?.drop();
});

describe('video listing', () => {
  it('pages through every video newest first with no duplicate or gap, ties broken by id', async () => {
    const pages = await allPages('limit=5');
    expect(pages.map((p) => p.videos.length)).toEqual([5, 5, 2]);
    expect(pages.at(-1)!.nextCursor).toBeNull();
    expect(pages.flatMap((p) => p.videos.map((v) => v.videoId))).toEqual([...seeded].sort(byListingOrder).map((v) => v.videoId));
    const first = pages[0]!.videos[0]!;
    const source = seeded.find((v) => v.videoId === first.videoId)!;
    expect(first).toEqual({
      videoId: source.videoId,
      owner: source.owner,
      status: source.status,
      progress: null,
      uploadedAt: source.uploadedAt,
      updatedAt: source.updatedAt,
      duration: 4.5,
      width: 1280,
      height: 720,
      renditions: [],
      size: 1_234_567,
      checksum: source.checksum,
    });
  });

  it('stays stable while uploads arrive between pages', async () => {
    const before = [...seeded].sort(byListingOrder).map((v) => v.videoId);
    const arrived: string[] = [];
    const pages = await allPages('limit=4', admin, async () => {
      arrived.push((await seed(videoMeta())).videoId);
    });
    const listed = pages.flatMap((p) => p.videos.map((v) => v.videoId));
    expect(listed).toEqual(before);
    expect(listed.filter((id) => arrived.includes(id))).toEqual([]);
    // The new uploads are on the first page of a fresh listing.
    const fresh = await list('limit=100');
    expect(fresh.videos.slice(0, arrived.length).map((v) => v.videoId).sort()).toEqual([...arrived].sort());
  });

  it('shows a non-admin only their own videos, and refuses another owner', async () => {
    const own = (await allPages('limit=3', alice)).flatMap((p) => p.videos);
    expect(own.length).toBe(seeded.filter((v) => v.owner === 'user-alice').length);
    expect(own.every((v) => v.owner === 'user-alice')).toBe(true);
    expect((await list('owner=user-alice', alice)).videos).toHaveLength(Math.min(own.length, DEFAULT_LIMIT));
    expect(await statusOf(list('owner=user-bob', alice))).toBe(403);
  });

  it('filters by status and owner for admins', async () => {
    const page = await list('status=queued&owner=user-alice&limit=100');
    const expected = seeded.filter((v) => v.status === 'queued' && v.owner === 'user-alice');
    expect(expected.length).toBeGreaterThan(0);
    expect(page.videos.map((v) => v.videoId).sort()).toEqual(expected.map((v) => v.videoId).sort());
    expect(page.nextCursor).toBeNull();
  });

  it('applies the default limit and accepts the maximum', async () => {
    for (let i = seeded.length; i <= DEFAULT_LIMIT; i++) await seed(videoMeta());
    const page = await list('');
    expect(page.limit).toBe(DEFAULT_LIMIT);
    expect(page.videos).toHaveLength(DEFAULT_LIMIT);
    expect(page.nextCursor).not.toBeNull();
    expect((await list(`limit=${MAX_LIMIT}`)).videos).toHaveLength(seeded.length);
  });

  it.each([
    'limit=0',
    `limit=${MAX_LIMIT + 1}`,
    'limit=abc',
    'limit=1.5',
    'limit=-1',
    'status=removed',
    'cursor=not-a-cursor',
    `cursor=${Buffer.from(JSON.stringify(['2025-01-01T00:00:00.000Z', 'nope'])).toString('base64url')}`,
    `cursor=${Buffer.from(JSON.stringify(['yesterday', '00000000-0000-4000-8000-000000000001'])).toString('base64url')}`,
    'owners=user-bob',
    'limit=5&limit=6',
    // Owners are JWT subjects as identity providers issue them: up to MAX_SUBJECT_LENGTH characters.
    `owner=${'x'.repeat(MAX_SUBJECT_LENGTH + 1)}`,
  ])('rejects %s with 400', (query) => {
    let error: unknown;
    try {
      parseListingQuery(new URLSearchParams(query));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).status).toBe(400);
  });

  it('accepts an owner as long as the longest JWT subject', () => {
    expect(parseListingQuery(new URLSearchParams(`owner=${'x'.repeat(MAX_SUBJECT_LENGTH)}`)).owner).toHaveLength(MAX_SUBJECT_LENGTH);
  });

  it('answers 503 when the mirror database is down', async () => {
    const down = new MetadataMirror(`postgres://postgres@127.0.0.1:${await freePort()}/x`, false, memoryLogger().log);
    try {
      expect(await statusOf(listVideos({ mirror: down, store: unusedStore }, parseListingQuery(new URLSearchParams()), admin))).toBe(503);
    } finally {
      await down.close();
    }
  });

  it('includes title and description only when the mirror holds them', async () => {
    const phi = new MetadataMirror(db.dsn, true, memoryLogger().log);
    try {
      const meta = { ...videoMeta({ owner: 'user-carol', uploadedAt: '2031-01-01T00:00:00.000Z' }), metaChecksum: 'sha256:c' };
      await phi.mirror(meta);
      const [carol] = (await list('owner=user-carol')).videos;
      expect(carol).toMatchObject({ title: 'Jane Doe knee MRI follow-up', description: 'post-op week 2' });
      expect((await list('owner=user-alice&limit=1')).videos[0]).not.toHaveProperty('title');
    } finally {
      await phi.close();
    }
  });
});

describe('video listing from the media volume (no mirror configured)', () => {
  let root: string;
  let store: MediaStore;
  const written: VideoMeta[] = [];
  const listVolume = (query: string, caller: ListingCaller = admin) => listVideos({ mirror: null, store }, parseListingQuery(new URLSearchParams(query)), caller);
  const pagesOf = pager(listVolume);

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'pv-listing-volume-'));
    store = new MediaStore(path.join(root, 'videos'));
    const statuses = ['uploaded', 'queued', 'transcoding', 'transcoded', 'failed'] as const;
    for (let i = 0; i < 11; i++) {
      const uploadedAt = new Date(Date.UTC(2025, 0, 1, 0, Math.floor(i / 2))).toISOString();
      const status = statuses[i % 5]!;
      const extra: Partial<VideoMeta> =
        status === 'transcoded' ? { renditions: ['240p'], outputs: { hlsMaster: 'hls/master.m3u8', poster: 'hls/poster.jpg' } } : status === 'transcoding' ? { progress: 40 } : {};
      written.push(await store.write(videoMeta({ owner: i % 3 === 0 ? 'user-bob' : 'user-alice', status, uploadedAt, ...extra })));
    }
    // Neither a half-made video (finalize has not written meta.json yet) nor a corrupt one is listed, nor a stray file.
    await mkdir(path.join(store.videoDir, randomUUID()));
    const corrupt = path.join(store.videoDir, randomUUID());
    await mkdir(corrupt);
    writeFileSync(path.join(corrupt, 'meta.json'), '{"videoId":');
    writeFileSync(path.join(store.videoDir, 'notes.txt'), 'not a video');
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('pages through every video newest first, ties broken by id, as the mirror orders them', async () => {
    const pages = await pagesOf('limit=4');
    expect(pages.map((p) => p.videos.length)).toEqual([4, 4, 3]);
    expect(pages.flatMap((p) => p.videos.map((v) => v.videoId))).toEqual([...written].sort(byListingOrder).map((v) => v.videoId));
  });

  it('gives each video its title, status, progress, duration, renditions and, once transcoded, its poster', async () => {
    const videos = (await listVolume('limit=100')).videos;
    const transcoded = videos.find((v) => v.status === 'transcoded')!;
    expect(transcoded).toMatchObject({ title: 'Jane Doe knee MRI follow-up', duration: 4.5, renditions: ['240p'], poster: 'hls/poster.jpg', progress: null });
    expect(videos.find((v) => v.status === 'transcoding')).toMatchObject({ progress: 40 });
    expect(videos.filter((v) => v.poster !== undefined)).toHaveLength(written.filter((v) => v.status === 'transcoded').length);
    // Never the file name (possible PHI) nor the whole user metadata.
    expect(JSON.stringify(videos)).not.toContain('patient-jane-doe');
  });

  it('shows a non-admin only their own videos, and refuses another owner', async () => {
    const own = (await pagesOf('limit=3', alice)).flatMap((p) => p.videos);
    expect(own.map((v) => v.videoId).sort()).toEqual(written.filter((v) => v.owner === 'user-alice').map((v) => v.videoId).sort());
    expect(await statusOf(listVolume('owner=user-bob', alice))).toBe(403);
  });

  it('filters by status and owner for admins', async () => {
    const page = await listVolume('status=queued&owner=user-alice&limit=100');
    const expected = written.filter((v) => v.status === 'queued' && v.owner === 'user-alice');
    expect(expected.length).toBeGreaterThan(0);
    expect(page.videos.map((v) => v.videoId).sort()).toEqual(expected.map((v) => v.videoId).sort());
  });

  it('lists nothing, not an error, before the first video is stored', async () => {
    const fresh = new MediaStore(path.join(root, 'never-created'));
    expect(await listVideos({ mirror: null, store: fresh }, parseListingQuery(new URLSearchParams()), admin)).toEqual({ videos: [], nextCursor: null, limit: DEFAULT_LIMIT });
  });
});
