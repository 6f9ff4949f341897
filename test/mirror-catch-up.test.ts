/** The mirror's catch-up after an outage, against a real PostgreSQL and a real Redis. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/config.js';
import { MediaStore, type VideoMeta } from '../shared/media-store.js';
import { registry } from '../shared/metrics.js';
import { attachMirror } from '../shared/mirror/attach.js';
import { MirrorCatchUp, PENDING_KEY, type CatchUpOptions } from '../shared/mirror/catch-up.js';
import { MetadataMirror } from '../shared/mirror/mirror.js';
import { freePort } from '../services/devstack/supervisor.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

const noSecrets = mkdtempSync(path.join(tmpdir(), 'pv-nosecrets-'));
const configFor = (dsn: string) => loadConfig({ HMAC_SECRET: 'x'.repeat(32), METADATA_DSN: dsn }, { secretsDir: noSecrets });
const FAST: CatchUpOptions = { intervalMs: 50, minBackoffMs: 50, maxBackoffMs: 200 };
/** For mirrors whose own catch-up must stay out of the way of the one under test. */
const IDLE: CatchUpOptions = { intervalMs: 3_600_000 };

let db: TestDatabase;
let redis: TestRedis;
let videoDir: string;
const closers: { close(): Promise<void> }[] = [];
const { log } = memoryLogger();

beforeAll(async () => {
  db = await createTestDatabase();
  redis = await startRedis();
  videoDir = mkdtempSync(path.join(tmpdir(), 'pv-catch-up-'));
});

afterAll(async () => {
  await Promise.all(closers.map((c) => c.close()));
  await db?.drop();
  await redis?.close();
  rmSync(videoDir, { recursive: true, force: true });
  rmSync(noSecrets, { recursive: true, force: true });
});

const store = () => new MediaStore(videoDir, redis.client());
const pending = async () => (await redis.client().hkeys(PENDING_KEY)).sort();
/** The mirrored meta.json checksum of each video (undefined: no row). */
async function mirrored(ids: string[]): Promise<Map<string, string>> {
  const { rows } = await db.client.query<{ id: string; meta_checksum: string }>('SELECT id, meta_checksum FROM videos WHERE id = ANY($1)', [ids]);
  return new Map(rows.map((r) => [r.id, r.meta_checksum]));
}
/** True when every video's row holds its current meta.json. */
async function matchesDisk(ids: string[]): Promise<boolean> {
  const rows = await mirrored(ids);
  const disk = await Promise.all(ids.map((id) => store().read(id)));
  return disk.every((m) => rows.get(m.videoId) === m.metaChecksum);
}
async function pendingGauge(): Promise<number | undefined> {
  return (await registry.getSingleMetric('pulsevault_metadata_mirror_pending')?.get())?.values[0]?.value;
}

/** A replica's catch-up, on a pool and a Redis connection of its own. */
function replica(videos: MediaStore, options: CatchUpOptions = {}): MirrorCatchUp {
  const mirror = new MetadataMirror(db.dsn, false, log);
  closers.push(mirror);
  return new MirrorCatchUp(mirror, videos, redis.client(), log, options);
}

describe('mirror catch-up', () => {
  it('remembers the writes missed while PostgreSQL refuses connections and re-mirrors their latest state once it is back', async () => {
    const videos = store();
    const attached = attachMirror(videos, redis.client(), configFor(db.dsn), log, FAST)!;
    // Closed by this test, so its catch-up leaves alone what the next tests drain themselves.
    try {
      await attached.mirror.ready();
      const before = await videos.write(videoMeta());
      expect(await matchesDisk([before.videoId])).toBe(true);

      await db.refuseConnections();
      const written = [await videos.write(videoMeta()), await videos.write(videoMeta())];
      // Changed twice during the outage: the row must end with the second change.
      await videos.update(before.videoId, (m) => ({ ...m, status: 'queued' }));
      const latest = await videos.update(before.videoId, (m) => ({ ...m, status: 'transcoded', progress: 100, renditions: ['240p', '360p'] }));
      const ids = [before.videoId, ...written.map((v) => v.videoId)];

      expect(await pending()).toEqual([...ids].sort());
      expect(await pendingGauge()).toBe(3);
      const during = await mirrored(ids);
      expect(during.get(before.videoId)).toBe(before.metaChecksum);
      for (const v of written) expect(during.has(v.videoId)).toBe(false);

      await db.acceptConnections();
      await waitFor(async () => (await pending()).length === 0 && (await matchesDisk(ids)), 10_000, 'the catch-up to re-mirror the missed writes');
      expect((await mirrored([before.videoId])).get(before.videoId)).toBe(latest.metaChecksum);
      const row = (await db.client.query('SELECT status, progress, renditions FROM videos WHERE id = $1', [before.videoId])).rows[0];
      expect(row).toEqual({ status: 'transcoded', progress: 100, renditions: ['240p', '360p'] });
      expect(await pendingGauge()).toBe(0);
    } finally {
      await attached.close();
    }
  });

  it('keeps the entry of a video missed again while a pass read it, so that write is mirrored too', async () => {
    const target = await store().write(videoMeta());
    // Another replica, whose database is unreachable, changes the video in the middle of the pass.
    const downStore = store();
    closers.push(attachMirror(downStore, redis.client(), configFor(`postgres://postgres@127.0.0.1:${await freePort()}/pulsevault`), log, IDLE)!);
    let raced: VideoMeta | undefined;
    class RacingStore extends MediaStore {
      override async read(videoId: string): Promise<VideoMeta> {
        const meta = await super.read(videoId);
        if (videoId === target.videoId && !raced) raced = await downStore.update(videoId, (m) => ({ ...m, status: 'failed' }));
        return meta;
      }
    }
    const catchUp = replica(new RacingStore(videoDir, redis.client()));
    await catchUp.markPending(target.videoId);

    // The pass mirrors what it read, but the entry was bumped meanwhile: it stays.
    expect(await catchUp.drain()).toEqual({ taken: 1, mirrored: 1, deleted: 0, settled: 0 });
    expect((await mirrored([target.videoId])).get(target.videoId)).toBe(target.metaChecksum);
    expect(await pending()).toEqual([target.videoId]);

    expect(await catchUp.drain()).toEqual({ taken: 1, mirrored: 1, deleted: 0, settled: 1 });
    expect((await mirrored([target.videoId])).get(target.videoId)).toBe(raced!.metaChecksum);
    expect(await pending()).toEqual([]);
  });

  it('deletes the row of a video gone from disk and keeps the row of an unreadable meta.json, settling both', async () => {
    const catchUp = replica(store());
    const [gone, corrupt] = [await store().write(videoMeta()), await store().write(videoMeta())];
    const seed = replica(store());
    await seed.markPending(gone.videoId);
    await seed.markPending(corrupt.videoId);
    await seed.drain();
    expect(await mirrored([gone.videoId, corrupt.videoId])).toEqual(new Map([[gone.videoId, gone.metaChecksum], [corrupt.videoId, corrupt.metaChecksum]]));

    rmSync(path.join(videoDir, gone.videoId), { recursive: true });
    writeFileSync(path.join(videoDir, corrupt.videoId, 'meta.json'), '{"videoId":"x"}');
    await catchUp.markPending(gone.videoId);
    await catchUp.markPending(corrupt.videoId);
    expect(await catchUp.drain()).toEqual({ taken: 2, mirrored: 0, deleted: 1, settled: 2 });
    expect(await mirrored([gone.videoId, corrupt.videoId])).toEqual(new Map([[corrupt.videoId, corrupt.metaChecksum]]));
    expect(await pending()).toEqual([]);
    rmSync(path.join(videoDir, corrupt.videoId), { recursive: true });
  });

  it('lets two replicas drain at once: every row right, every entry settled exactly once, no error', async () => {
    const plain = new MediaStore(videoDir); // no mirror attached: the database has none of these yet
    const videos: VideoMeta[] = [];
    for (let i = 0; i < 40; i++) videos.push(await plain.write(videoMeta({ owner: `user-${i % 3}` })));
    // A third of them have a stale row already (mirrored, then changed on disk unmirrored).
    const stale = replica(plain);
    for (const v of videos.slice(0, 13)) await stale.markPending(v.videoId);
    await stale.drain();
    for (const [i, v] of videos.slice(0, 13).entries()) videos[i] = await plain.update(v.videoId, (m) => ({ ...m, status: 'transcoded' }));
    for (const v of videos) await stale.markPending(v.videoId);
    const ids = videos.map((v) => v.videoId);
    expect(await pending()).toHaveLength(40);

    const [a, b] = [replica(store(), { batchSize: 7 }), replica(store(), { batchSize: 7 })];
    let settled = 0;
    // Each round settles at least one batch, so 40 entries take at most 6; a drain that throws fails the test.
    for (let round = 0; round < 10 && (await a.pendingCount()) > 0; round++) {
      const passes = await Promise.all([a.drain(), b.drain()]);
      settled += passes.reduce((n, p) => n + p.settled, 0);
    }
    expect(await pending()).toEqual([]);
    expect(settled).toBe(40);
    expect(await matchesDisk(ids)).toBe(true);
  });
});
