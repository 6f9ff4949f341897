/** The PostgreSQL metadata mirror on the write path and its catch-up after an outage, against a real PostgreSQL and a real Redis. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../shared/platform/config.js';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { registry } from '../shared/platform/metrics.js';
import { migrate, MIGRATIONS, MigrationError } from '../shared/mirror/migrations/index.js';
import { attachMirror } from '../shared/mirror/attach.js';
import { MirrorCatchUp, PENDING_KEY, type CatchUpOptions } from '../shared/mirror/catch-up.js';
import { MetadataMirror } from '../shared/mirror/mirror.js';
import { freePort } from '../services/devstack/supervisor.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { waitFor } from './helpers/wait.js';

const SECRET = 'x'.repeat(32);
const noSecrets = mkdtempSync(path.join(tmpdir(), 'pv-nosecrets-'));
const configFor = (env: Record<string, string>) => loadConfig({ HMAC_SECRET: SECRET, ...env }, { secretsDir: noSecrets });
/** Catch-up timing: idle, for mirrors whose catch-up must leave the pending hash to the test; fast, for the one under test. */
const IDLE: CatchUpOptions = { intervalMs: 3_600_000 };
const FAST: CatchUpOptions = { intervalMs: 50, minBackoffMs: 50, maxBackoffMs: 200 };

async function failures(reason: string): Promise<number> {
  const metric = registry.getSingleMetric('pulsevault_metadata_mirror_failures_total');
  const values = metric ? (await metric.get()).values : [];
  return values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

let db: TestDatabase;
let redis: TestRedis;
let videoDir: string;
const mirrors: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  redis = await startRedis();
  videoDir = mkdtempSync(path.join(tmpdir(), 'pv-mirror-'));
});

afterAll(async () => {
  await Promise.all(mirrors.map((m) => m.close()));
  await db?.drop();
  await redis?.close();
  rmSync(videoDir, { recursive: true, force: true });
  rmSync(noSecrets, { recursive: true, force: true });
});

function storeWithMirror(env: Record<string, string>) {
  const { log, lines } = memoryLogger();
  const store = new MediaStore(videoDir);
  const mirror = attachMirror(store, redis.client(), configFor(env), log, IDLE);
  if (mirror) mirrors.push(mirror);
  return { store, mirror, lines };
}

const row = async (id: string) => (await db.client.query('SELECT * FROM videos WHERE id = $1', [id])).rows[0];

describe('metadata mirror', () => {
  it('is a no-op without METADATA_DSN, and METADATA_DSN must be a postgres:// URL', () => {
    expect(storeWithMirror({}).mirror).toBeNull();
    expect(() => configFor({ METADATA_DSN: 'mysql://root@127.0.0.1/pv' })).toThrow(ConfigError);
    expect(() => configFor({ METADATA_DSN: 'mysql://root@127.0.0.1/pv' })).toThrow(/^invalid configuration: METADATA_DSN must be a postgres:\/\/ URL$/);
    expect(configFor({ METADATA_DSN: 'postgresql://u@db:5432/pv' }).metadataDsn).toBe('postgresql://u@db:5432/pv');
  });

  it('mirrors every meta.json write, without title, description or filename', async () => {
    const { store } = storeWithMirror({ METADATA_DSN: db.dsn });
    const written = await store.write(videoMeta({ renditions: [] }));
    const r = await row(written.videoId);
    expect(r).toMatchObject({
      owner: 'user-alice',
      status: 'uploaded',
      progress: null,
      duration: 4.5,
      width: 1280,
      height: 720,
      renditions: [],
      checksum: written.checksum,
      size: '1234567',
      meta_checksum: written.metaChecksum,
      title: null,
      description: null,
    });
    expect((r.uploaded_at as Date).toISOString()).toBe(written.uploadedAt);

    const updated = await store.update(written.videoId, (m) => ({ ...m, status: 'transcoded', progress: 100, renditions: ['240p', '360p'] }));
    const r2 = await row(written.videoId);
    expect(r2).toMatchObject({ status: 'transcoded', progress: 100, renditions: ['240p', '360p'], meta_checksum: updated.metaChecksum });
    expect((r2.updated_at as Date).toISOString()).toBe(updated.updatedAt);

    const everything = JSON.stringify((await db.client.query('SELECT row_to_json(v) AS j FROM videos v')).rows);
    expect(everything).not.toContain('Jane');
    expect(everything).not.toContain('patient-jane');
  });

  it('mirrors title and description only with METADATA_MIRROR_PHI=true', async () => {
    const { store } = storeWithMirror({ METADATA_DSN: db.dsn, METADATA_MIRROR_PHI: 'true' });
    const written = await store.write(videoMeta());
    expect(await row(written.videoId)).toMatchObject({ title: 'Jane Doe knee MRI follow-up', description: 'post-op week 2' });
    const everything = JSON.stringify(await row(written.videoId));
    expect(everything).not.toContain('patient-jane');
  });

  it('never lets a late, older write overwrite a newer row', async () => {
    const mirror = new MetadataMirror(db.dsn, false, memoryLogger().log);
    mirrors.push(mirror);
    const base = videoMeta({ metaChecksum: 'sha256:x' });
    const older = { ...base, status: 'queued' as const, updatedAt: '2030-01-01T00:00:00.000Z' };
    const newer = { ...base, status: 'transcoded' as const, updatedAt: '2030-01-01T00:00:05.000Z' };
    await mirror.mirror(newer);
    await mirror.mirror(older);
    expect((await row(base.videoId)).status).toBe('transcoded');
  });

  it('applies each migration once, even with replicas starting together, and refuses an edited one', async () => {
    const fresh = await createTestDatabase();
    try {
      const starters = [1, 2, 3].map(() => new MetadataMirror(fresh.dsn, false, memoryLogger().log));
      await Promise.all(starters.map((m) => m.ready()));
      await Promise.all(starters.map((m) => m.close()));
      const applied = await fresh.client.query('SELECT version, name FROM schema_migrations ORDER BY version');
      expect(applied.rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));

      const client = new pg.Client({ connectionString: fresh.dsn });
      await client.connect();
      try {
        expect(await migrate(client)).toEqual([]);
        const edited = MIGRATIONS.map((m) => ({ ...m, sql: `${m.sql}\n-- edited` }));
        await expect(migrate(client, edited)).rejects.toBeInstanceOf(MigrationError);
      } finally {
        await client.end();
      }
    } finally {
      await fresh.drop();
    }
  });

  it('tolerates an outage: with the DSN on a closed port every write still succeeds and each miss is counted, logged and remembered by id', async () => {
    const closed = await freePort();
    const { store, lines } = storeWithMirror({ METADATA_DSN: `postgres://postgres@127.0.0.1:${closed}/pulsevault` });
    const errorsBefore = await failures('error');
    const pausedBefore = await failures('paused');

    const metas = [videoMeta(), videoMeta(), videoMeta()];
    for (const meta of metas) {
      const written = await store.write(meta);
      expect((await store.read(meta.videoId)).metaChecksum).toBe(written.metaChecksum);
    }
    // The first write tried and failed; the others skipped the database while it was paused.
    expect((await failures('error')) - errorsBefore).toBe(1);
    expect((await failures('paused')) - pausedBefore).toBe(2);

    const warnings = lines().map((l) => JSON.parse(l) as { level: number; videoId?: string });
    for (const meta of metas) expect(warnings.some((w) => w.videoId === meta.videoId && w.level === 40)).toBe(true);
    expect(await redis.client().hkeys(PENDING_KEY)).toEqual(expect.arrayContaining(metas.map((m) => m.videoId)));
    const text = lines().join('\n');
    expect(text).not.toContain('Jane');
    expect(text).not.toContain('patient-jane');
    expect(text).not.toContain(String(closed));
  });
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
  const mirror = new MetadataMirror(db.dsn, false, memoryLogger().log);
  mirrors.push(mirror);
  return new MirrorCatchUp(mirror, videos, redis.client(), memoryLogger().log, options);
}

describe('mirror catch-up', () => {
  // Misses left by the outage test above would otherwise count here.
  beforeAll(async () => {
    await redis.client().del(PENDING_KEY);
  });

  it('remembers the writes missed while PostgreSQL refuses connections and re-mirrors their latest state once it is back', async () => {
    const videos = store();
    const attached = attachMirror(videos, redis.client(), configFor({ METADATA_DSN: db.dsn }), memoryLogger().log, FAST)!;
    // Closed here, so that its catch-up leaves alone what the next tests drain themselves.
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
    const { store: downStore } = storeWithMirror({ METADATA_DSN: `postgres://postgres@127.0.0.1:${await freePort()}/pulsevault` });
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
    await catchUp.markPending(gone.videoId);
    await catchUp.markPending(corrupt.videoId);
    await catchUp.drain();
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
