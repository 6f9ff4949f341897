/**
 * The CENC packager (shared/crypto/cenc.ts) on ffmpeg's own dash-muxer output (lavfi sources):
 * each encrypted segment decrypts (ffmpeg -decryption_key) to exactly the frames and audio of the
 * clear one, its mdat differs from the clear one's, it does not decode without the key; H.264,
 * HEVC and AAC; AV1 and a second pass are refused.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CencError, encryptInitSegment, encryptMediaSegment, keyIdOf } from '../shared/crypto/cenc.js';
import { newId } from '../shared/platform/ids.js';

const run = promisify(execFile);
const key = randomBytes(16);
const kid = keyIdOf(newId());

/** A 4 s clip (two segments per stream) as the dash muxer writes it, video in `codec`. */
async function dashOutput(codec: string[]): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-cenc-unit-'));
  await run('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=192x108:rate=25:duration=4', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=4',
    '-map', '0:v', '-map', '1:a', ...codec, '-g', '50', '-keyint_min', '50', '-sc_threshold', '0', '-c:a', 'aac', '-b:a', '64k',
    '-f', 'dash', '-dash_segment_type', 'mp4', '-seg_duration', '2', '-adaptation_sets', 'id=0,streams=0 id=1,streams=1',
    '-init_seg_name', 'init_$RepresentationID$.m4s', '-media_seg_name', 'seg_$RepresentationID$_$Number%05d$.m4s', path.join(dir, 'manifest.mpd'),
  ]);
  return dir;
}

/** Decoded frames' md5 (or the decoder's complaint) of an init segment followed by one media segment. */
async function decoded(dir: string, init: Buffer, segment: Buffer, withKey: boolean): Promise<string> {
  const file = path.join(dir, `probe-${randomBytes(4).toString('hex')}.mp4`);
  writeFileSync(file, Buffer.concat([init, segment]));
  const { stdout, stderr } = await run('ffmpeg', ['-v', 'error', ...(withKey ? ['-decryption_key', key.toString('hex')] : []), '-i', file, '-f', 'md5', '-'], { maxBuffer: 1 << 26 }).catch((e: { stdout: string; stderr: string }) => e);
  return stderr ? `error: ${stderr.split('\n')[0]}` : stdout.trim();
}

const mdatOf = (segment: Buffer) => segment.subarray(segment.indexOf('mdat') + 4);

describe('CENC packager', () => {
  for (const [name, codec] of [
    ['H.264', ['-c:v', 'libx264', '-preset', 'ultrafast']],
    ['HEVC', ['-c:v', 'libx265', '-preset', 'ultrafast', '-tag:v', 'hvc1', '-x265-params', 'log-level=error']],
  ] as const) {
    it(`${name} and AAC: each segment decrypts to exactly the clear one's samples, and is noise without the key`, async () => {
      const dir = await dashOutput([...codec]);
      for (const stream of ['0', '1']) {
        const clearInit = readFileSync(path.join(dir, `init_${stream}.m4s`));
        const { init, sample } = encryptInitSegment(clearInit, kid);
        expect(sample.kind).toBe(stream === '0' ? (name === 'HEVC' ? 'hevc' : 'avc') : 'audio');
        expect(() => encryptInitSegment(init, kid)).toThrow(CencError);
        const segments = readdirSync(dir).filter((n) => n.startsWith(`seg_${stream}_`));
        expect(segments.length).toBeGreaterThanOrEqual(2);
        for (const seg of segments) {
          const clear = readFileSync(path.join(dir, seg));
          const encrypted = encryptMediaSegment(clear, key, sample);
          expect(mdatOf(encrypted).equals(mdatOf(clear)), seg).toBe(false);
          expect(() => encryptMediaSegment(encrypted, key, sample)).toThrow(CencError);
          const expected = await decoded(dir, clearInit, clear, false);
          expect(expected).toMatch(/^MD5=/);
          expect(await decoded(dir, init, encrypted, true), `${stream}/${seg} with the key`).toBe(expected);
          expect(await decoded(dir, init, encrypted, false), `${stream}/${seg} without the key`).not.toBe(expected);
        }
      }
    });
  }

  it('refuses AV1 (its clear frame headers are not implemented) with CencError', async () => {
    const dir = await dashOutput(['-c:v', 'libsvtav1', '-preset', '12']);
    expect(() => encryptInitSegment(readFileSync(path.join(dir, 'init_0.m4s')), kid)).toThrow(/cannot encrypt "av01"/);
  });
});
