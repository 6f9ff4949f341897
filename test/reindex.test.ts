/** `pulsevault reindex`: reconciling the mirror with VIDEO_DIR, against a real PostgreSQL. */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { MetadataMirror } from '../shared/mirror/mirror.js';
import { reindex, type ReindexReport } from '../shared/mirror/reconcile.js';
import { freePort } from '../services/devstack/supervisor.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';

const run = promisify(execFile);

let db: TestDatabase;
let videoDir: string;
let mirror: MetadataMirror;
const store = () => new MediaStore(videoDir);
const { log } = memoryLogger();
const videos: VideoMeta[] = [];
const corruptId = '00000000-0000-4000-8000-00000000c0de';

const ids = async () => (await db.client.query<{ id: string }>('SELECT id FROM videos ORDER BY id')).rows.map((r) => r.id);

beforeAll(async () => {
  db = await createTestDatabase();
  videoDir = mkdtempSync(path.join(tmpdir(), 'pv-reindex-'));
  mirror = new MetadataMirror(db.dsn, false, log);
  // Six videos written with no mirror attached: the mirror starts out empty.
  for (let i = 0; i < 6; i++) videos.push(await store().write(videoMeta({ owner: `user-${i % 2}` })));
  // Not videos: a stray folder, a file, a video dir without meta.json.
  mkdirSync(path.join(videoDir, 'lost+found'));
  writeFileSync(path.join(videoDir, 'README'), 'x');
  mkdirSync(path.join(videoDir, '00000000-0000-4000-8000-0000000000aa'));
  // A video whose meta.json fails its checksum.
  mkdirSync(path.join(videoDir, corruptId));
  writeFileSync(path.join(videoDir, corruptId, 'meta.json'), '{"videoId":"00000000-0000-4000-8000-00000000c0de","metaChecksum":"sha256:0"}');
});

afterAll(async () => {
  await mirror?.close();
  await db?.drop();
  rmSync(videoDir, { recursive: true, force: true });
});

const counts = (r: Partial<ReindexReport>): ReindexReport => ({ scanned: 7, added: 0, updated: 0, removed: 0, unchanged: 0, invalid: 1, ...r });

describe('reindex', () => {
  it('fills an empty mirror from disk, then finds nothing to do (idempotent)', async () => {
    expect(await reindex(mirror, store(), log, { batchSize: 4 })).toEqual(counts({ added: 6 }));
    expect(await ids()).toEqual(videos.map((v) => v.videoId).sort());
    expect(await reindex(mirror, store(), log, { batchSize: 4 })).toEqual(counts({ unchanged: 6 }));
  });

  it('repairs deleted and altered rows and removes rows with no video on disk', async () => {
    const [a, b, c, d, e] = videos.map((v) => v.videoId);
    await db.client.query('DELETE FROM videos WHERE id = ANY($1)', [[a, b]]);
    await db.client.query(`UPDATE videos SET status = 'failed' WHERE id = $1`, [c]);
    // Altered with a future updated_at and PHI that the mirror must not hold: the disk still wins.
    await db.client.query(`UPDATE videos SET owner = 'mallory', title = 'leaked', updated_at = '2999-01-01' WHERE id = $1`, [d]);
    const ghost = videoMeta();
    await mirror.mirror({ ...ghost, metaChecksum: 'sha256:ghost' });
    // A row for the video whose meta.json is corrupt is kept: the disk has the video, unreadable or not.
    await mirror.mirror({ ...videoMeta({ videoId: corruptId }), metaChecksum: 'sha256:old' });

    expect(await reindex(mirror, store(), log)).toEqual(counts({ added: 2, updated: 2, removed: 1, unchanged: 2 }));
    expect(await ids()).toEqual([...videos.map((v) => v.videoId), corruptId].sort());
    const rows = (await db.client.query('SELECT id, owner, status, title, updated_at FROM videos WHERE id = ANY($1)', [[c, d, e]])).rows;
    for (const r of rows) {
      const disk = videos.find((v) => v.videoId === r.id)!;
      expect(r).toMatchObject({ owner: disk.owner, status: disk.status, title: null });
      expect((r.updated_at as Date).toISOString()).toBe(disk.updatedAt);
    }
    expect(await reindex(mirror, store(), log)).toEqual(counts({ unchanged: 6 }));
  });

  it('removes the row of a video deleted from disk', async () => {
    const gone = videos.pop()!;
    rmSync(path.join(videoDir, gone.videoId), { recursive: true });
    expect(await reindex(mirror, store(), log)).toEqual(counts({ scanned: 6, removed: 1, unchanged: 5 }));
    expect(await ids()).not.toContain(gone.videoId);
  });

  it('leaves alone what the write path mirrors while it runs', async () => {
    const live = new MediaStore(videoDir);
    live.onWrite((m) => mirror.mirror(m));
    const target = videos[0]!;
    let fresh: VideoMeta | undefined;
    // A store whose first read races a live update of that video and a new upload, as production would.
    class RacingStore extends MediaStore {
      override async read(videoId: string): Promise<VideoMeta> {
        const meta = await super.read(videoId);
        if (videoId === target.videoId && !fresh) {
          fresh = await live.write(videoMeta());
          await live.update(videoId, (m) => ({ ...m, status: 'transcoded' }));
        }
        return meta;
      }
    }
    await reindex(mirror, new RacingStore(videoDir), log, { batchSize: 1 });
    expect((await db.client.query('SELECT status FROM videos WHERE id = $1', [target.videoId])).rows[0].status).toBe('transcoded');
    expect(await ids()).toContain(fresh!.videoId);
    videos.push(fresh!);
    videos[0] = await live.read(target.videoId);
  });

  it('runs as `pulsevault reindex`, printing the counts, and fails cleanly on a missing VIDEO_DIR', async () => {
    await db.client.query('DELETE FROM videos WHERE id = $1', [videos[1]!.videoId]);
    const env = { PATH: process.env.PATH, HMAC_SECRET: 'x'.repeat(32), METADATA_DSN: db.dsn, VIDEO_DIR: videoDir, LOG_LEVEL: 'error' };
    const cli = ['dist/scripts/pulsevault.js', 'reindex'];
    const ok = await run(process.execPath, [...cli, '--json'], { env });
    expect(JSON.parse(ok.stdout)).toMatchObject({ scanned: videos.length + 1, added: 1, updated: 0, removed: 0, invalid: 1 });

    const human = await run(process.execPath, cli, { env });
    expect(human.stdout).toMatch(/^reindex: \d+ videos on disk; 0 added, 0 updated, 0 removed, \d+ unchanged, 1 with unreadable meta\.json/);

    const missing = await run(process.execPath, cli, { env: { ...env, VIDEO_DIR: path.join(videoDir, 'nope') } }).catch((e: { code: number; stderr: string }) => e);
    expect(missing).toMatchObject({ code: 66 });
    expect((missing as { stderr: string }).stderr).toContain(`pulsevault reindex: VIDEO_DIR ${path.join(videoDir, 'nope')} does not exist (ENOENT); set MEDIA_ROOT or VIDEO_DIR`);
    expect(await ids()).toHaveLength(videos.length + 1);

    const noDsn = await run(process.execPath, cli, { env: { ...env, METADATA_DSN: '' } }).catch((e: { code: number; stderr: string }) => e);
    expect(noDsn).toMatchObject({ code: 78 });
    expect((noDsn as { stderr: string }).stderr).toContain('METADATA_DSN');
  });

  it.each([
    ['PostgreSQL does not answer', async () => `postgres://postgres@127.0.0.1:${await freePort()}/pulsevault`, 69, /^pulsevault reindex: PostgreSQL at 127\.0\.0\.1:\d+ does not answer \(ECONNREFUSED\); start it, or fix the host and port in METADATA_DSN$/],
    ['the database does not exist', async () => `postgres://postgres@127.0.0.1:5432/pv_no_such_db`, 78, /^pulsevault reindex: database pv_no_such_db does not exist at 127\.0\.0\.1:5432 \(3D000\); create it \(createdb pv_no_such_db\) or fix METADATA_DSN$/],
    ['the login is refused', async () => `postgres://pv_no_such_role:hunter2@127.0.0.1:5432/postgres`, 77, /^pulsevault reindex: PostgreSQL at 127\.0\.0\.1:5432 refused user pv_no_such_role \(28\w{3}\); fix the user or password in METADATA_DSN/],
  ])('fails with one line naming the fix when %s', async (_what, dsn, status, line) => {
    // The default log level: the failure is still the one line.
    const env = { PATH: process.env.PATH, HMAC_SECRET: 'x'.repeat(32), METADATA_DSN: await dsn(), VIDEO_DIR: videoDir };
    const failed = await run(process.execPath, ['dist/scripts/pulsevault.js', 'reindex'], { env }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed.code, failed.stderr).toBe(status);
    expect(failed.stderr.trimEnd().split('\n'), failed.stderr).toHaveLength(1);
    expect(failed.stderr.trimEnd()).toMatch(line);
    expect(failed.stderr).not.toContain('hunter2');
  });
});
