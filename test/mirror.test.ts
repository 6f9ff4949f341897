/** The PostgreSQL metadata mirror on the write path, against a real PostgreSQL. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../shared/config.js';
import { MediaStore } from '../shared/media-store.js';
import { registry } from '../shared/metrics.js';
import { migrate, MIGRATIONS, MigrationError } from '../shared/migrations/index.js';
import { attachMirror } from '../shared/mirror/attach.js';
import { PENDING_KEY } from '../shared/mirror/catch-up.js';
import { MetadataMirror } from '../shared/mirror/mirror.js';
import { freePort } from '../services/devstack/supervisor.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const SECRET = 'x'.repeat(32);
const noSecrets = mkdtempSync(path.join(tmpdir(), 'pv-nosecrets-'));
const configFor = (env: Record<string, string>) => loadConfig({ HMAC_SECRET: SECRET, ...env }, { secretsDir: noSecrets });

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
});

function storeWithMirror(env: Record<string, string>) {
  const { log, lines } = memoryLogger();
  const store = new MediaStore(videoDir);
  // The catch-up (test/mirror-catch-up.test.ts) must not drain, during this file, the misses it asserts.
  const mirror = attachMirror(store, redis.client(), configFor(env), log, { intervalMs: 3_600_000 });
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
