/**
 * The records lifecycle's domain (shared/lifecycle/) over a real redis-server, a real audit writer
 * and real video directories (ffmpeg lavfi renditions): a disposal failed at every step leaves a
 * video that plays whole or is refused everywhere, and a retry or the sweep finishes it; audit
 * down changes nothing; holds and retention; the PostgreSQL mirror (real, on 127.0.0.1) marks the
 * row deleted.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog, type AuditLog } from '../shared/audit/client.js';
import { DISPOSAL_STEPS, disposeVideo, sweepDisposals, type LifecycleDeps } from '../shared/lifecycle/dispose.js';
import { setLegalHold } from '../shared/lifecycle/hold.js';
import { runRetention } from '../shared/lifecycle/retention.js';
import { attachMirror } from '../shared/mirror/attach.js';
import { DELETED_MARK, isDeleted, refuseIfDeleted } from '../shared/lifecycle/tombstone.js';
import { loadConfig, type Config } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { leaseKey } from '../shared/transcode/lease.js';
import { MediaStore } from '../shared/video/store.js';
import { readAuditEntries, startAuditWriter } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { createTestDatabase } from './helpers/postgres.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './helpers/secrets.js';

let redis: TestRedis;
let writer: { stop(): Promise<void> };
let root: string;
let config: Config;
let store: MediaStore;
let audit: AuditLog;
let deps: LifecycleDeps;
const request = { actor: { userId: 'owner-1', role: 'uploader' }, requestId: 'req-1', clientIp: '198.51.100.7' };

beforeAll(async () => {
  redis = await startRedis();
  root = mkdtempSync(path.join(tmpdir(), 'pv-lifecycle-'));
  writer = await startAuditWriter(redis.url, path.join(root, 'audit'));
  config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, REDIS_URL: redis.url, MEDIA_ROOT: root, AUDIT_ACK_TIMEOUT_MS: '3000' }, { secretsDir: '/nonexistent' });
  const log = createLogger('lifecycle-test', 'error');
  store = new MediaStore(config.videoDir, redis.client());
  audit = createAuditLog(config, redis.client(), log);
  deps = { config, store, redis: redis.client(), audit, log };
}, 120_000);
afterAll(async () => {
  await audit?.close();
  await writer?.stop();
  await redis?.close();
  rmSync(root, { recursive: true, force: true });
});

/** Every file of the video dir, relative, sorted. */
function filesOf(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/** A transcoded video with the leftovers a fan-out and an interrupted transcode leave. */
async function video(fields = {}) {
  const v = await makeVideo(config.videoDir, fields);
  await mkdir(path.join(v.dir, '.chunks'), { recursive: true });
  await writeFile(path.join(v.dir, '.chunks', 'chunk-000.mp4'), 'part');
  await mkdir(path.join(v.dir, '.transcode-abc'), { recursive: true });
  await writeFile(path.join(v.dir, '.transcode-abc', 'seg.m4s'), 'work');
  return v;
}

class StepFailure extends Error {}

describe('disposal', () => {
  it('removes every file but the tombstone, which keeps no PHI and proves what was destroyed; audited first', async () => {
    const v = await video();
    const tombstone = await disposeVideo(deps, v.videoId, 'duplicate', request);
    expect(filesOf(v.dir)).toEqual([DELETED_MARK, 'meta.json']);
    const onDisk = await store.read(v.videoId); // checksum verified
    expect(onDisk).toMatchObject({ status: 'deleted', checksum: v.meta.checksum, size: v.meta.size, deletion: { reason: 'duplicate', disposedAt: expect.any(String) } });
    expect(onDisk.deletion!.deletedBy).toMatch(/^sub-[0-9a-f]{32}$/);
    expect(readFileSync(store.metaPath(v.videoId), "utf8")).not.toContain("PHI");
    const entry = readAuditEntries(path.join(root, 'audit')).find((e) => e.action === 'video.deleted' && e.videoId === v.videoId);
    expect(entry).toMatchObject({ category: 'admin', outcome: 'success', reason: 'duplicate' });
    // Again: the same tombstone, nothing else happens.
    const again = await disposeVideo(deps, v.videoId, 'other', request);
    expect(again.deletion).toEqual(tombstone.deletion);
    expect(readAuditEntries(path.join(root, 'audit')).filter((e) => e.action === 'video.deleted' && e.videoId === v.videoId)).toHaveLength(1);
  });

  it.each(DISPOSAL_STEPS)('failed before step %s: the video plays whole or is refused everywhere; a retry and the sweep finish it', async (failAt) => {
    for (const finish of ['retry', 'sweep'] as const) {
      const v = await video();
      const before = filesOf(v.dir);
      const failing: LifecycleDeps = { ...deps, onStep: (step) => { if (step === failAt) throw new StepFailure(step); } };
      await expect(disposeVideo(failing, v.videoId, 'recorded_in_error', request)).rejects.toBeInstanceOf(StepFailure);
      if (await isDeleted(config.videoDir, v.videoId)) {
        await expect(refuseIfDeleted(config.videoDir, v.videoId)).rejects.toMatchObject({ status: 410, code: 'video_deleted' });
      } else {
        expect(filesOf(v.dir), 'not marked: every file still there').toEqual(before);
        expect((await store.read(v.videoId)).status).toBe('transcoded');
      }
      if (finish === 'retry') await disposeVideo(deps, v.videoId, 'recorded_in_error', request);
      else if (await isDeleted(config.videoDir, v.videoId)) await sweepDisposals(deps);
      else continue; // never marked: nothing for a sweep to finish, the video is whole
      expect(filesOf(v.dir), `${failAt}, ${finish}`).toEqual([DELETED_MARK, 'meta.json']);
      expect((await store.read(v.videoId)).deletion?.disposedAt, `${failAt}, ${finish}`).toEqual(expect.any(String));
    }
  });

  it('the PostgreSQL mirror keeps the row, marked deleted, with the title and renditions it mirrored gone', async () => {
    const db = await createTestDatabase();
    const mirrorConfig = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, REDIS_URL: redis.url, MEDIA_ROOT: root, METADATA_DSN: db.dsn, METADATA_MIRROR_PHI: 'true' }, { secretsDir: '/nonexistent' });
    const mirroredStore = new MediaStore(config.videoDir, redis.client());
    const mirror = attachMirror(mirroredStore, redis.client(), mirrorConfig, deps.log, { intervalMs: 3_600_000 })!;
    try {
      const v = await video();
      await mirroredStore.update(v.videoId, (m) => ({ ...m, progress: 100 })); // mirrored as a live video first
      const row = async () => (await db.client.query('SELECT status, title, description, renditions, checksum, size FROM videos WHERE id = $1', [v.videoId])).rows[0];
      expect(await row()).toMatchObject({ status: 'transcoded', title: 'PHI-title', renditions: ['240p'] });
      await disposeVideo({ ...deps, store: mirroredStore }, v.videoId, 'duplicate', request);
      expect(await row()).toEqual({ status: 'deleted', title: null, description: null, renditions: [], checksum: v.meta.checksum, size: String(v.meta.size) });
    } finally {
      await mirror.close();
      await db.drop();
    }
  });

  it('revokes the transcode leases of the video, chunks included', async () => {
    const v = await video();
    await redis.client().set(leaseKey(v.videoId), 'holder', 'PX', 60_000);
    await redis.client().set(leaseKey(`${v.videoId}:chunk:3`), 'holder', 'PX', 60_000);
    await disposeVideo(deps, v.videoId, 'duplicate', request);
    expect(await redis.client().exists(leaseKey(v.videoId), leaseKey(`${v.videoId}:chunk:3`))).toBe(0);
  });

  it('a sweep removes what a late transcode published into a disposed video', async () => {
    const v = await video();
    await disposeVideo(deps, v.videoId, 'duplicate', request);
    await mkdir(path.join(v.dir, 'hls'));
    await writeFile(path.join(v.dir, 'hls', 'master.m3u8'), '#EXTM3U\n');
    expect((await sweepDisposals(deps)).finished).toBeGreaterThanOrEqual(1);
    expect(filesOf(v.dir)).toEqual([DELETED_MARK, 'meta.json']);
  });

  it('a legal hold refuses the disposal with 409 legal_hold, removing nothing', async () => {
    const v = await video();
    await setLegalHold(deps, v.videoId, true, 'litigation', request);
    const before = filesOf(v.dir);
    await expect(disposeVideo(deps, v.videoId, 'duplicate', request)).rejects.toMatchObject({ status: 409, code: 'legal_hold' });
    expect(filesOf(v.dir)).toEqual(before);
    await setLegalHold(deps, v.videoId, false, 'resolved', request);
    await disposeVideo(deps, v.videoId, 'duplicate', request);
    expect(filesOf(v.dir)).toEqual([DELETED_MARK, 'meta.json']);
    const actions = readAuditEntries(path.join(root, 'audit')).filter((e) => e.videoId === v.videoId).map((e) => `${e.action}:${e.reason}`);
    expect(actions).toEqual(['video.hold:litigation', 'video.hold_released:resolved', 'video.deleted:duplicate']);
  });

  it('retention disposes of the expired, unheld videos only; a dry run changes nothing', async () => {
    const past = new Date(Date.now() - 86_400_000).toISOString();
    const expired = await video({ retainUntil: past });
    const held = await video({ retainUntil: past, legalHold: { since: past, reason: 'litigation' } });
    const kept = await video({ retainUntil: new Date(Date.now() + 86_400_000).toISOString() });
    const forever = await video();
    const dry = await runRetention(deps, { dryRun: true, perSecond: 100 });
    expect(dry.outcomes).toEqual(expect.arrayContaining([{ videoId: expired.videoId, action: 'would_dispose' }, { videoId: held.videoId, action: 'held' }]));
    expect(existsSync(path.join(expired.dir, 'original.mp4'))).toBe(true);
    const run = await runRetention(deps, { dryRun: false, perSecond: 100 });
    expect(run.outcomes).toEqual(expect.arrayContaining([{ videoId: expired.videoId, action: 'disposed' }, { videoId: held.videoId, action: 'held' }]));
    expect(run.outcomes.map((o) => o.videoId)).not.toContain(kept.videoId);
    expect((await store.read(expired.videoId)).deletion?.reason).toBe('retention_expired');
    for (const v of [held, kept, forever]) expect(existsSync(path.join(v.dir, 'original.mp4'))).toBe(true);
  });
});

describe('audit down', () => {
  it('503 audit_unavailable and nothing changed: no mark, every file, meta.json as it was', async () => {
    const v = await video();
    const before = { files: filesOf(v.dir), meta: readFileSync(store.metaPath(v.videoId), 'utf8') };
    await writer.stop();
    try {
      await expect(disposeVideo(deps, v.videoId, 'duplicate', request)).rejects.toMatchObject({ status: 503, code: 'audit_unavailable' });
      expect(filesOf(v.dir)).toEqual(before.files);
      expect(readFileSync(store.metaPath(v.videoId), 'utf8')).toBe(before.meta);
    } finally {
      writer = await startAuditWriter(redis.url, path.join(root, 'audit'));
    }
  });
});
