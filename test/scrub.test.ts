import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { Pacer, type Clock } from '../shared/video/scrub.js';
import { addVideo } from './helpers/videos.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function scrubCli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/scripts/pulsevault.js', 'scrub', ...args], { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr }),
    );
  });
}

const problems = (r: Result) =>
  r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { videoId: string; problem: string; detail: string });

/** A finalized video as finalize leaves it: random original + checksummed meta.json. */
async function addRandomVideo(store: MediaStore, bytes = 256 * 1024): Promise<VideoMeta> {
  const data = randomBytes(bytes);
  const meta = await addVideo(store, null, {
    filename: 'Patient Jane Doe consult.mp4',
    size: data.length,
    checksum: `sha256:${createHash('sha256').update(data).digest('hex')}`,
    metadata: { title: 'Follow-up for Jane Doe' },
  });
  writeFileSync(path.join(store.dir(meta.videoId), meta.original), data);
  return meta;
}

describe('pulsevault scrub', () => {
  const dirs: string[] = [];
  /** An empty vault of its own per test. */
  function vault(): { videoDir: string; store: MediaStore } {
    const videoDir = mkdtempSync(path.join(tmpdir(), 'pv-scrub-'));
    dirs.push(videoDir);
    return { videoDir, store: new MediaStore(videoDir) };
  }
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('passes an intact vault with exit 0 and a summary, ignoring entries that are not videos', async () => {
    const { videoDir, store } = vault();
    await addRandomVideo(store, 3 * 1024 * 1024);
    await addRandomVideo(store);
    mkdirSync(path.join(videoDir, '.publish-tmp-123'));
    writeFileSync(path.join(videoDir, 'stray.txt'), 'x');

    const r = await scrubCli(['--video-dir', videoDir, '--rate', '0']);
    expect(r.stderr).toMatch(/scrub: 2 videos checked, .* 0 problems/);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
  });

  it('reports every kind of damage once, with ids only, and exits 1', async () => {
    const { videoDir, store } = vault();
    const intact = await addRandomVideo(store);
    const flipped = await addRandomVideo(store);
    const truncated = await addRandomVideo(store);
    const gone = await addRandomVideo(store);
    const tampered = await addRandomVideo(store);
    const noMeta = randomUUID();

    const flippedFile = path.join(store.dir(flipped.videoId), 'original.mp4');
    const bytes = readFileSync(flippedFile);
    bytes[1000] = bytes[1000]! ^ 0xff; // same size, different content: only the hash can tell
    writeFileSync(flippedFile, bytes);
    writeFileSync(path.join(store.dir(truncated.videoId), 'original.mp4'), bytes.subarray(0, 100));
    unlinkSync(path.join(store.dir(gone.videoId), 'original.mp4'));
    const metaFile = store.metaPath(tampered.videoId);
    writeFileSync(metaFile, readFileSync(metaFile, 'utf8').replace('"status": "uploaded"', '"status": "transcoded"'));
    mkdirSync(path.join(videoDir, noMeta));

    const r = await scrubCli(['--video-dir', videoDir, '--rate', '0']);
    expect(r.code).toBe(1);
    const found = new Map(problems(r).map((p) => [p.videoId, p.problem]));
    expect(Object.fromEntries(found)).toEqual({
      [flipped.videoId]: 'checksum_mismatch',
      [truncated.videoId]: 'size_mismatch',
      [gone.videoId]: 'original_missing',
      [tampered.videoId]: 'meta_corrupt',
      [noMeta]: 'meta_missing',
    });
    expect(found.has(intact.videoId)).toBe(false);
    expect(r.stderr).toMatch(/6 videos checked, .* 5 problems/);
    // No PHI: the filename and title stored in meta.json never reach the report.
    expect(r.stdout + r.stderr).not.toMatch(/Jane Doe/);
  });

  it('reads VIDEO_DIR from the configuration when no directory is given, without any secret', async () => {
    const mediaRoot = vault().videoDir;
    const own = new MediaStore(path.join(mediaRoot, 'videos'));
    await addRandomVideo(own);
    // No HMAC_SECRET: scrub needs no secret.
    const r = await scrubCli([], { MEDIA_ROOT: mediaRoot, SECRETS_DIR: mediaRoot });
    expect(r.stderr).toMatch(/1 videos checked/);
    expect(r.code).toBe(0);
  });

  it.each([[['--rate', 'fast']], [['--rate', '-1']], [['--bogus']]])('refuses bad arguments %j with exit 64', async (args) => {
    const r = await scrubCli([...args, '--video-dir', vault().videoDir]);
    expect(r.code).toBe(64);
    expect(r.stdout).toBe('');
  });

  it('exits 66 when the video directory cannot be read', async () => {
    const r = await scrubCli(['--video-dir', path.join(vault().videoDir, 'does-not-exist')]);
    expect(r.code).toBe(66);
    expect(r.stderr).toMatch(/cannot read .*ENOENT/);
  });
});

describe('scrub pacing', () => {
  /** A clock that only moves when the pacer sleeps: the pacing arithmetic, without wall time. */
  function fakeClock(): Clock & { slept: number } {
    let t = 1_000;
    const c = {
      slept: 0,
      now: () => t,
      sleep: async (ms: number) => {
        c.slept += ms;
        t += ms;
      },
    };
    return c;
  }

  it('spreads bytes over time at the configured rate', async () => {
    const clock = fakeClock();
    const pacer = new Pacer(10_000_000, clock); // 10 MB/s
    for (let i = 0; i < 25; i++) await pacer.consumed(2_000_000); // 50 MB
    expect(clock.slept).toBeCloseTo(5_000, 6);
  });

  it('does not sleep when reading is already slower than the rate', async () => {
    const clock = fakeClock();
    const pacer = new Pacer(10_000_000, clock);
    await clock.sleep(1_000); // 1 s spent elsewhere (slow disk)
    clock.slept = 0;
    await pacer.consumed(5_000_000);
    expect(clock.slept).toBe(0);
  });

  it('never sleeps when unlimited', async () => {
    const clock = fakeClock();
    const pacer = new Pacer(0, clock);
    await pacer.consumed(1e12);
    expect(clock.slept).toBe(0);
  });
});
