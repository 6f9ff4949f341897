/**
 * A fanned-out transcode in an encrypted vault (MEDIA_KEK), with real ffmpeg and a real Redis: a
 * 8 s clip in two 4 s chunks. Part-way (the first committed, no join yet) every file of
 * `.chunks/` but the plan is ciphertext; the scrub checks their tags; a transcoder killed between
 * sealing a chunk and committing it leaves what the retry finishes; the join reads the sealed
 * chunks over loopback and publishes a ladder that plays.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync, type Dirent } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import HLS from 'hls-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedFile, MAGIC } from '../shared/crypto/chunked.js';
import { PlaintextSources } from '../shared/crypto/loopback.js';
import { deriveKey, renditionKey, type KeyPurpose, type VideoKeys } from '../shared/keys/video-keys.js';
import { CHUNK_COMMIT_STEPS, CHUNKS_DIR, chunkDone } from '../shared/transcode/fanout.js';
import { FfmpegError, runFfmpeg } from '../shared/transcode/ffmpeg-run.js';
import { leaseKey } from '../shared/transcode/lease.js';
import { checkEncoders, transcodeVideo } from '../shared/transcode/transcoder.js';
import type { VideoCodecFamily } from '../shared/transcode/ladder.js';
import { Pacer, scrubVideo } from '../shared/video/scrub.js';
import type { VideoMeta } from '../shared/video/store.js';
import { clearMarkers, entropy } from './helpers/ciphertext.js';
import { decryptRange } from './helpers/decrypt.js';
import { joinRung, rungSegments } from './helpers/fanout.js';
import { expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { spawnNode } from './helpers/node-process.js';
import { startTranscoder, transcodeJob as job, type TranscoderHarness } from './helpers/transcoder.js';
import { addEncryptedVideo } from './helpers/videos.js';

const run = promisify(execFile);
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-fanout-sealed-'));
const KEK = `k1:${randomBytes(32).toString('base64')}`;
const FPS = 25;
let harness: TranscoderHarness;
let keys: VideoKeys;
let codecs: VideoCodecFamily[];
let video: VideoMeta;

const folder = () => harness.store.dir(video.videoId);
const chunkJob = (index: number) => ({ ...job(video.videoId), part: { kind: 'chunk' as const, index } });
const keyFor = async (purpose: KeyPurpose) => deriveKey((await keys.dataKey(video.videoId))!, purpose);
const scrub = () => scrubVideo(harness.config.videoDir, video.videoId, new Pacer(0), undefined, keys);

/** Every entry under `.chunks/`, as paths within it. */
function chunkEntries(): Dirent[] {
  return readdirSync(path.join(folder(), CHUNKS_DIR), { recursive: true, withFileTypes: true }) as Dirent[];
}
const relative = (e: Dirent) => path.relative(path.join(folder(), CHUNKS_DIR), path.join(e.parentPath, e.name));

/**
 * Every file of `.chunks/` but the plan is whole ciphertext of ours: the magic, high entropy, none
 * of the clear formats' markers, and — opened with the key it is sealed under — none of its own
 * plaintext's box headers or JPEG head.
 */
async function expectChunksSealed(): Promise<string[]> {
  const files = chunkEntries().filter((e) => e.isFile()).map(relative).filter((f) => f !== 'plan.json');
  for (const f of files) {
    const bytes = readFileSync(path.join(folder(), CHUNKS_DIR, f));
    expect(bytes.subarray(0, MAGIC.length).equals(MAGIC), `${f} starts with the magic`).toBe(true);
    expect(entropy(bytes.subarray(32)), f).toBeGreaterThan(7.8);
    const plain = await unsealed(path.join(CHUNKS_DIR, f), f.includes('thumbs_') ? 'image' : 'chunk');
    expect(clearMarkers(bytes, plain), f).toEqual([]);
  }
  return files;
}

/** The plaintext of a sealed file of the video's folder. */
async function unsealed(rel: string, purpose: KeyPurpose): Promise<Buffer> {
  const enc = await EncryptedFile.open(await open(path.join(folder(), rel), 'r'), await keyFor(purpose), video.videoId);
  return decryptRange(enc, 0, enc.size - 1).finally(() => enc.close());
}

beforeAll(async () => {
  harness = await startTranscoder(tmp, { MEDIA_KEK: KEK, RENDITIONS: '240p,360p', TRANSCODE_CHUNK_SEGMENTS: '2' });
  keys = harness.store.keys!;
  codecs = await checkEncoders(harness.config);
  const clip = await makeClip(path.join(tmp, 'clip.mp4'), { seconds: 8, width: 640, height: 360, fps: FPS });
  video = await addEncryptedVideo(harness.store, clip);
  expect(await transcodeVideo(harness.deps, codecs, job(video.videoId))).toEqual({ outcome: 'fanned_out', chunks: 2 });
  // Part-way: the first chunk committed, the second (and so the join) not yet.
  expect(await transcodeVideo(harness.deps, codecs, chunkJob(0))).toEqual({ outcome: 'chunk_transcoded', chunk: 0 });
}, 120_000);

afterAll(async () => {
  await harness?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('a fanned-out transcode in an encrypted vault', () => {
  it('keeps every committed chunk and chunk sheet sealed while the join waits (no clear work file left)', async () => {
    expect(chunkEntries().filter((e) => !e.isFile())).toEqual([]);
    expect((await expectChunksSealed()).sort()).toEqual(['0.mp4', 'thumbs_0_000.jpg']);
    // What is sealed is the chunk (under its own key) and a JPEG (under the images' key, as published).
    const chunk = await unsealed(`${CHUNKS_DIR}/0.mp4`, 'chunk');
    expect(chunk.subarray(4, 8).toString('latin1')).toBe('ftyp');
    await expect(unsealed(`${CHUNKS_DIR}/0.mp4`, 'original')).rejects.toMatchObject({ code: 'media_integrity' });
    expect((await unsealed(`${CHUNKS_DIR}/thumbs_0_000.jpg`, 'image')).subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
  });

  it('the scrub checks their tags: no finding, and a flipped byte in a chunk is ciphertext_tampered naming it', async () => {
    expect(await scrub()).toBeNull();
    const file = path.join(folder(), CHUNKS_DIR, '0.mp4');
    const flip = () => {
      const fd = openSync(file, 'r+');
      const byte = Buffer.alloc(1);
      readSync(fd, byte, 0, 1, 32 + 100);
      byte[0]! ^= 1;
      writeSync(fd, byte, 0, 1, 32 + 100);
      closeSync(fd);
    };
    flip();
    try {
      expect(await scrub()).toMatchObject({ problem: 'ciphertext_tampered', detail: expect.stringMatching(/^\.chunks\/0\.mp4: chunk 0 /) });
    } finally {
      flip();
    }
    expect(await scrub()).toBeNull();
  });

  it('a transcoder killed between sealing a chunk and committing it leaves only ciphertext, and the retry completes the chunk', async () => {
    for (const step of CHUNK_COMMIT_STEPS) {
      const child = spawnNode(['test/helpers/crashing-chunk.mjs', JSON.stringify(chunkJob(1))], {
        ...harness.env,
        PATH: process.env.PATH,
        SECRETS_DIR: path.join(tmp, 'none'),
        LOG_LEVEL: 'error',
        CHUNK_CRASH_AT: step,
      });
      expect(await child.exited, `${step}: ${child.output()}`).toBeNull(); // killed by the signal
      expect(await chunkDone(folder(), 1), step).toBe(false);
      expect((await expectChunksSealed()).length, step).toBeGreaterThan(2); // the sealed files waiting for their rename
      // The dead transcoder's lease would lapse within its TTL.
      await harness.redis.del(leaseKey(`${video.videoId}:chunk:1`));
    }
    expect(await transcodeVideo(harness.deps, codecs, chunkJob(1))).toEqual({ outcome: 'chunk_transcoded', chunk: 1 });
    expect(chunkEntries().filter((e) => !e.isFile())).toEqual([]);
    expect((await expectChunksSealed()).sort()).toEqual(['0.mp4', '1.mp4', 'thumbs_0_000.jpg', 'thumbs_1_000.jpg']);
    expect(await scrub()).toBeNull();
  });

  it("ffmpeg's words about a loopback input, which end up in logs, never carry its URL", async () => {
    const sources = new PlaintextSources(keys, video.videoId);
    try {
      const url = await sources.source(path.join(folder(), CHUNKS_DIR, '0.mp4'), 'chunk');
      const failed = await runFfmpeg(['-v', 'error', '-i', `${url}.missing`, '-f', 'null', '-']).catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(FfmpegError);
      expect((failed as FfmpegError).message).toMatch(/<loopback>\/0\.mp4\.missing: .*404/);
      expect((failed as FfmpegError).message).not.toContain(new URL(url).pathname.split('/')[1]);
    } finally {
      await sources.close();
    }
  });

  it('the join reads the sealed chunks over loopback and publishes a ladder that plays (every frame of every rung, with the key)', async () => {
    expect(await transcodeVideo(harness.deps, codecs, { ...job(video.videoId), part: { kind: 'join' } })).toMatchObject({ outcome: 'transcoded' });
    expectValidLadder(folder(), { sourceDuration: video.duration!, hasAudio: true, sealedImages: true });
    const hls = path.join(folder(), 'hls');
    const key = renditionKey((await keys.dataKey(video.videoId))!).toString('hex');
    const master = HLS.parse(readFileSync(path.join(hls, 'master.m3u8'), 'utf8'));
    if (!master.isMasterPlaylist) throw new Error('not a master playlist');
    for (const variant of master.variants) {
      // Segment by segment, as a player appends them (ffmpeg 5.1 decrypts no more than two CENC fragments in one file).
      const rung = rungSegments(hls, variant.uri);
      let frames = 0;
      for (const segment of rung.segments) {
        const file = joinRung(hls, { ...rung, segments: [segment] }, path.join(tmp, segment.uri.replace('.m4s', '.mp4')));
        const { stdout, stderr } = await run('ffprobe', ['-v', 'error', '-decryption_key', key, '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=nb_read_frames', '-of', 'csv=p=0', file]);
        expect(stderr, segment.uri).toBe('');
        frames += Number(stdout.trim().split(',')[0]);
      }
      expect(frames, variant.uri).toBe(video.duration! * FPS);
    }
    // The sheets were copied sealed and published as they were.
    for (const n of [0, 1]) expect((await unsealed(`hls/thumbs_${n}_000.jpg`, 'image')).subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
    expect(await scrub()).toBeNull();
  });
});
