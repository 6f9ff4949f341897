import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UnprocessableError } from '../shared/platform/errors.js';
import { MEDIA_TYPES } from '../shared/delivery/media-path.js';
import { probe, STORED_EXTENSIONS } from '../shared/video/probe.js';
import { makeClip } from './helpers/media.js';

const dir = mkdtempSync(path.join(tmpdir(), 'pv-probe-'));

describe('probe', () => {
  it('reads a generated mp4: container, size, duration, codecs', async () => {
    const file = await makeClip(path.join(dir, 'a.bin'), { seconds: 2, width: 320, height: 240, extra: ['-f', 'mp4'] });
    const p = await probe(file);
    expect(p).toMatchObject({ extension: 'mp4', width: 320, height: 240, videoCodec: 'h264', audioCodec: 'aac', hasAudio: true, fps: 25 });
    expect(p.duration).toBeGreaterThan(1.9);
    expect(p.duration).toBeLessThan(2.2);
  });

  it('names the container from its content, not the file name', async () => {
    const file = await makeClip(path.join(dir, 'b.mp4'), { audio: false, extra: ['-f', 'matroska'] });
    const p = await probe(file);
    expect(p.extension).toBe('mkv');
    expect(p.hasAudio).toBe(false);
    expect(p.audioCodec).toBeNull();
  });

  it('applies rotation to the display size (portrait phone video)', async () => {
    const file = await makeClip(path.join(dir, 'c.mp4'), { width: 320, height: 240, rotate: 90 });
    const p = await probe(file);
    expect(p.rotation % 180).toBe(90);
    expect([p.width, p.height]).toEqual([240, 320]);
  });

  it('stores originals only with extensions the stream function serves, each with a video type', () => {
    for (const ext of STORED_EXTENSIONS) expect(MEDIA_TYPES[ext], ext).toMatch(/^video\//);
  });

  it.each([
    ['text', Buffer.from('hello, not a video')],
    ['empty', Buffer.alloc(0)],
  ])('refuses %s with a 422', async (_name, bytes) => {
    const file = path.join(dir, `bad-${_name}`);
    writeFileSync(file, bytes);
    const err = await probe(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnprocessableError);
    expect((err as UnprocessableError).status).toBe(422);
    expect((err as Error).message).not.toContain(dir);
  });
});
