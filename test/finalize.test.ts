/**
 * POST /uploads/finalize through the real local stack, with two finalize
 * replicas behind the round-robin gateway.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVideoId, MediaStore } from '../shared/video/store.js';
import { markTranscoded, markTranscoding } from '../shared/video/state.js';
import { TRANSCODE_STREAM } from '../shared/transcode/queue.js';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { readAuditEntries } from './helpers/audit.js';
import { waitFor } from './helpers/wait.js';
import { makeClip } from './helpers/media.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { createUpload, finalize, offsetOf, patch, sha256, TUS, uploadIdOf } from './helpers/uploads.js';

// Stand-ins for PHI: they must reach meta.json and nothing else.
const FILENAME = 'Jane-Doe-knee-MRI-2024.mp4';
const TITLE = 'Follow-up of Jane Doe';
const DESCRIPTION = 'Post-op week 6, left knee';

let stack: TestStack;
let clip: Buffer;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-finalize-'));
  [stack, clip] = await Promise.all([
    // No transcoder replica (scaled to zero): queued jobs stay queued, so what finalize left is what we read.
    startStack({ env: { LOCAL_REPLICAS: 'finalize=2,transcoder=0' } }),
    makeClip(path.join(dir, 'clip.mp4'), { seconds: 2 }).then((f) => readFileSync(f)),
  ]);
});

afterAll(async () => {
  await stack?.stop();
});

const videoDir = () => path.join(stack.mediaRoot, 'videos');
const videos = () => readdirSync(videoDir()).filter(isVideoId).sort();

async function uploaded(bytes: Buffer, upTo = bytes.length): Promise<{ url: string; id: string }> {
  const url = await createUpload(`${stack.url}/uploads`, bytes.length);
  if (upTo > 0) expect((await patch(url, 0, bytes.subarray(0, upTo))).status).toBe(204);
  return { url, id: uploadIdOf(url) };
}

async function streamEntries(stream: string): Promise<string[]> {
  const entries = await stack.redis.client().xrange(stream, '-', '+');
  return entries.map(([, fields]) => fields[1]!);
}

const body = (uploadId: string, extra: Record<string, unknown> = {}) => ({
  uploadId,
  filename: FILENAME,
  userId: 'clinician-7',
  metadata: { title: TITLE, description: DESCRIPTION },
  ...extra,
});

describe('finalize', () => {
  it('publishes the video with a verified meta.json, audits it and queues the transcode', async () => {
    const { url, id } = await uploaded(clip);
    const res = await finalize(stack.url, body(id));
    expect(res.status).toBe(200);
    // The spec's fields, plus `original`: the path a client signs to read the original back.
    expect(Object.keys(res.json).sort()).toEqual(['checksum', 'original', 'size', 'status', 'transcoding', 'videoId']);
    expect(res.json).toMatchObject({ status: 'uploaded', size: clip.length, checksum: sha256(clip), transcoding: 'queued', original: 'original.mp4' });
    const videoId = res.json.videoId as string;
    expect(isVideoId(videoId)).toBe(true);

    const meta = await new MediaStore(videoDir()).read(videoId); // verifies the metadata checksum
    expect(meta).toMatchObject({
      videoId,
      filename: FILENAME,
      owner: 'clinician-7',
      status: 'queued',
      original: 'original.mp4',
      size: clip.length,
      checksum: sha256(clip),
      width: 320,
      height: 240,
      fps: 25,
      videoCodec: 'h264',
      audioCodec: 'aac',
      metadata: { title: TITLE, description: DESCRIPTION },
      uploadId: id,
    });
    expect(meta.duration).toBeGreaterThan(1.9);
    expect(meta.bitrate).toBeGreaterThan(0);
    expect(readFileSync(path.join(videoDir(), videoId, 'original.mp4')).equals(clip)).toBe(true);

    // The upload is consumed: gone from staging, and tus no longer knows it.
    expect(readdirSync(path.join(stack.mediaRoot, 'uploads')).filter((f) => f.startsWith(id))).toEqual([]);
    expect((await fetch(url, { method: 'HEAD', headers: TUS })).status).toBe(404);

    const jobs = (await streamEntries(TRANSCODE_STREAM)).filter((j) => j.includes(videoId));
    expect(jobs).toHaveLength(1);
    const audit = readAuditEntries(path.join(stack.mediaRoot, 'audit'));
    expect(audit).toContainEqual(
      expect.objectContaining({ category: 'upload', action: 'finalize', outcome: 'success', videoId, actor: { userId: subjectPseudonym(TEST_HMAC_SECRET, 'clinician-7'), role: null } }),
    );
  });

  it('names the original by its container, not by the client’s file name: a Matroska upload is original.mkv', async () => {
    const mkv = readFileSync(await makeClip(path.join(mkdtempSync(path.join(tmpdir(), 'pv-finalize-mkv-')), 'clip.mkv'), { seconds: 1 }));
    const { id } = await uploaded(mkv);
    const res = await finalize(stack.url, body(id)); // the client calls it .mp4
    expect(res.status).toBe(200);
    expect(res.json.original).toBe('original.mkv');
    const stored = path.join(videoDir(), res.json.videoId as string, res.json.original as string);
    expect(readFileSync(stored).equals(mkv)).toBe(true);
  });

  it('is idempotent: a retry returns the same video; another user gets 404', async () => {
    const { id } = await uploaded(clip);
    const first = await finalize(stack.url, body(id));
    const before = videos();
    const again = await finalize(stack.url, body(id)); // round-robin: the other replica
    expect(again.status).toBe(200);
    expect(again.json).toEqual(first.json);
    expect(videos()).toEqual(before);
    expect((await streamEntries(TRANSCODE_STREAM)).filter((j) => j.includes(first.json.videoId as string))).toHaveLength(1);
    expect((await finalize(stack.url, body(id, { userId: 'someone-else' }))).status).toBe(404);
  });

  it('answers a replay with the video as it is now, e.g. transcoded, not the queued of the first answer', async () => {
    const { id } = await uploaded(clip);
    const first = await finalize(stack.url, body(id));
    expect(first.json.transcoding).toBe('queued');
    const videoId = first.json.videoId as string;
    // No transcoder runs in this stack: move the video on as one would.
    const store = new MediaStore(videoDir(), stack.redis.client());
    await markTranscoding(store, videoId, 1);
    const replayWhileTranscoding = await finalize(stack.url, body(id));
    expect(replayWhileTranscoding.json).toEqual({ ...first.json, transcoding: 'transcoding' });
    await markTranscoded(store, videoId, { ladder: [{ name: '240p', width: 320, height: 240, kbps: 145 }], codecs: ['h264'], outputs: { hlsMaster: 'hls/master.m3u8' } });
    const replay = await finalize(stack.url, body(id));
    expect(replay.status).toBe(200);
    expect(replay.json).toEqual({ ...first.json, transcoding: 'transcoded' });
  });

  it('creates one video when two finalize calls for one upload race on two replicas', async () => {
    const { id } = await uploaded(clip);
    const before = videos().length;
    const results = await Promise.all([finalize(stack.url, body(id)), finalize(stack.url, body(id))]);
    expect(results.map((r) => r.status)).toEqual([200, 200]);
    expect(results[0]!.json.videoId).toBe(results[1]!.json.videoId);
    expect(videos().length).toBe(before + 1);
    expect((await streamEntries(TRANSCODE_STREAM)).filter((j) => j.includes(results[0]!.json.videoId as string))).toHaveLength(1);
  });

  describe('refusals change nothing', () => {
    it.each([
      ['a missing uploadId', { uploadId: undefined }, 'uploadId'],
      ['an uploadId that is not a UUID', { uploadId: '../../etc/passwd' }, 'uploadId'],
      ['an empty filename', { filename: ' ' }, 'filename'],
      ['a filename with a path', { filename: 'a/b.mp4' }, 'filename'],
      ['a filename with a control character', { filename: 'a\u0007.mp4' }, 'filename'],
      ['a filename over 255 bytes', { filename: `${'é'.repeat(126)}.mp4` }, 'filename'],
      ['a missing userId', { userId: undefined }, 'userId'],
      ['metadata that is an array', { metadata: ['x'] }, 'metadata'],
      ['metadata over 16 KiB', { metadata: { notes: 'x'.repeat(16 * 1024) } }, 'metadata'],
      ['an unknown field', { metdata: {} }, 'metdata'],
    ])('400 for %s, naming the field', async (_name, change, field) => {
      const { id } = await uploaded(clip);
      const before = videos();
      const res = await finalize(stack.url, body(id, change));
      expect(res.status).toBe(400);
      expect(res.json.message).toContain(field);
      expect(JSON.stringify(res.json)).not.toContain(FILENAME);
      expect(videos()).toEqual(before);
      expect(await offsetOf(`${stack.url}/uploads/${id}`)).toBe(clip.length);
    });

    it('400 for a body that is not JSON', async () => {
      const res = await fetch(`${stack.url}/uploads/finalize`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"uploadId":' });
      expect(res.status).toBe(400);
    });

    it('404 for an unknown upload, 409 for an incomplete one (kept resumable)', async () => {
      expect((await finalize(stack.url, body('0b7e1a42-4a55-4f3e-9b51-2a6d2f0c8e11'))).status).toBe(404);
      const { url, id } = await uploaded(clip, 1000);
      const before = videos();
      const res = await finalize(stack.url, body(id));
      expect(res.status).toBe(409);
      expect(res.json.error).toBe('upload_incomplete');
      expect(videos()).toEqual(before);
      expect(await offsetOf(url)).toBe(1000);
      expect((await patch(url, 1000, clip.subarray(1000))).status).toBe(204);
      expect((await finalize(stack.url, body(id))).status).toBe(200);
    });

    it.each([
      ['not a video', () => Buffer.from('just some text, certainly not a video\n'.repeat(50))],
      ['a truncated video', () => clip.subarray(0, Math.floor(clip.length / 2))],
    ])('422 for %s; the upload is kept so the client can terminate it', async (_name, bytes) => {
      const data = bytes();
      const { url, id } = await uploaded(data);
      const before = videos();
      const res = await finalize(stack.url, body(id));
      expect(res.status).toBe(422);
      expect(res.json.message).toMatch(/video/);
      expect(videos()).toEqual(before);
      expect(existsSync(path.join(videoDir(), '.finalize', `${id}.json`))).toBe(false);
      expect(await offsetOf(url)).toBe(data.length);
      expect((await fetch(url, { method: 'DELETE', headers: TUS })).status).toBe(204);
    });
  });

  it('keeps titles, descriptions and filenames out of logs and audit entries', async () => {
    const audit = JSON.stringify(readAuditEntries(path.join(stack.mediaRoot, 'audit')));
    expect(audit).toContain('"reason":"upload_incomplete"'); // refusals are audited too
    for (const phi of [FILENAME, TITLE, DESCRIPTION]) {
      expect(audit).not.toContain(phi);
      expect(stack.output()).not.toContain(phi);
    }
  });

  it('counts finalize outcomes and durations', async () => {
    const expected = [
      ...['finalized', 'replayed', 'rejected'].map((outcome) => new RegExp(`pulsevault_uploads_total\\{[^}]*outcome="${outcome}"[^}]*\\} [1-9]`)),
      /pulsevault_finalize_duration_seconds_count\{[^}]*outcome="finalized"[^}]*\} [1-9]/,
      /pulsevault_upload_bytes_total\{[^}]*\} [1-9]/,
    ];
    // The stack sums every replica's own registry; a replica busy past the scrape's deadline is
    // summed with its figures of an earlier scrape, so wait for one that holds them all.
    const metrics = await waitFor(
      async () => {
        const text = await (await fetch(`${stack.url}/metrics`)).text();
        return expected.every((re) => re.test(text)) && text;
      },
      60_000,
      'a scrape with every finalize and upload counter',
      500,
    );
    for (const re of expected) expect(metrics).toMatch(re);
  });
});
