/** RFC 6381 codecs strings from init segments' decoder configuration records, and the DASH manifest rewrite. */
import { describe, expect, it } from 'vitest';
import { XMLParser } from 'fast-xml-parser';
import { codecString, readVideoConfig, type VideoConfig } from '../shared/transcode/codec-string.js';
import { finishManifest, parseManifest } from '../shared/transcode/playlists.js';

const avc = (profileIdc: number, constraintFlags: number, levelIdc: number, sampleEntry: 'avc1' | 'avc3' = 'avc1'): VideoConfig => ({ sampleEntry, profileIdc, constraintFlags, levelIdc });
const hevc = (o: Partial<Extract<VideoConfig, { sampleEntry: 'hvc1' | 'hev1' }>>): VideoConfig => ({
  sampleEntry: 'hvc1',
  profileSpace: 0,
  highTier: false,
  profileIdc: 1,
  compatibilityFlags: 0x6000_0000,
  constraintBytes: [0xb0, 0, 0, 0, 0, 0],
  levelIdc: 93,
  ...o,
});
const av1 = (profile: number, levelIdx: number, o: { highTier?: boolean; highBitdepth?: boolean; twelveBit?: boolean } = {}): VideoConfig => ({
  sampleEntry: 'av01',
  profile,
  levelIdx,
  highTier: false,
  highBitdepth: false,
  twelveBit: false,
  ...o,
});

describe('codecString', () => {
  it.each<[string, VideoConfig, string]>([
    // H.264: profile_idc, constraint_set flags, level_idc, two lower-case hex digits each.
    ['x264 ultrafast (Constrained Baseline 1.1)', avc(0x42, 0xc0, 11), 'avc1.42c00b'],
    ['High 4.0', avc(0x64, 0x00, 40), 'avc1.640028'],
    ['Main 3.1', avc(0x4d, 0x40, 31), 'avc1.4d401f'],
    ['High 10 5.1', avc(0x6e, 0x00, 51), 'avc1.6e0033'],
    ['level 1b of High (level_idc 9, zero-padded)', avc(0x64, 0x00, 9), 'avc1.640009'],
    ['avc3 sample entry', avc(0x64, 0x00, 31, 'avc3'), 'avc3.64001f'],
    // HEVC (ISO/IEC 14496-15 Annex E).
    ['HEVC Main 3.1 (Apple)', hevc({}), 'hvc1.1.6.L93.B0'],
    ['HEVC Main 10 4.0 (Apple)', hevc({ profileIdc: 2, compatibilityFlags: 0x2000_0000, levelIdc: 120 }), 'hvc1.2.4.L120.B0'],
    ['x265 Main 2.0 (progressive, frame only, not non-packed)', hevc({ constraintBytes: [0x90, 0, 0, 0, 0, 0], levelIdc: 60 }), 'hvc1.1.6.L60.90'],
    ['high tier 5.1', hevc({ profileIdc: 2, compatibilityFlags: 0x2000_0000, highTier: true, levelIdc: 153 }), 'hvc1.2.4.H153.B0'],
    ['hev1 sample entry', hevc({ sampleEntry: 'hev1' }), 'hev1.1.6.L93.B0'],
    ['Annex E example: profile space 1, two compatibility flags, two constraint bytes', hevc({ sampleEntry: 'hev1', profileSpace: 1, profileIdc: 4, compatibilityFlags: 0x8200_0000, highTier: true, levelIdc: 120, constraintBytes: [0xb0, 0x23, 0, 0, 0, 0] }), 'hev1.A4.41.H120.B0.23'],
    ['compatibility flag 31 only (unsigned reversal)', hevc({ compatibilityFlags: 0x0000_0001 }), 'hvc1.1.80000000.L93.B0'],
    ['no constraint flags: one zero byte kept', hevc({ constraintBytes: [0, 0, 0, 0, 0, 0] }), 'hvc1.1.6.L93.00'],
    ['inner zero bytes kept, only trailing ones dropped', hevc({ constraintBytes: [0x90, 0, 0, 0, 0, 0x01] }), 'hvc1.1.6.L93.90.00.00.00.00.01'],
    // AV1 (AV1 ISOBMFF binding): profile, two-digit level, tier, two-digit bit depth.
    ['SVT-AV1 at 320x240 (level 2.0)', av1(0, 0), 'av01.0.00M.08'],
    ['Main 3.0', av1(0, 4), 'av01.0.04M.08'],
    ['Main 10-bit, high tier 5.1', av1(0, 13, { highTier: true, highBitdepth: true }), 'av01.0.13H.10'],
    ['High profile', av1(1, 8), 'av01.1.08M.08'],
    ['Professional 12-bit', av1(2, 12, { highBitdepth: true, twelveBit: true }), 'av01.2.12M.12'],
    ['Professional 10-bit', av1(2, 12, { highBitdepth: true }), 'av01.2.12M.10'],
    ['twelve_bit ignored outside profile 2', av1(0, 8, { highBitdepth: true, twelveBit: true }), 'av01.0.08M.10'],
    ['level 31 (no level constraint)', av1(0, 31), 'av01.0.31M.08'],
  ])('%s', (_name, config, expected) => {
    expect(codecString(config)).toBe(expected);
  });
});

/** An ISO BMFF box: 32-bit size, type, payload. */
function box(type: string, ...payload: (Uint8Array | number[])[]): Buffer {
  const body = Buffer.concat(payload.map((p) => Buffer.from(p)));
  const header = Buffer.alloc(8);
  header.writeUInt32BE(8 + body.length);
  header.write(type, 4, 'latin1');
  return Buffer.concat([header, body]);
}

/** moov/trak/…/stsd with one sample entry (`fields` bytes of entry fields, then the child boxes). */
function initSegment(entry: string, fields: number, ...children: Buffer[]): Buffer {
  const stsd = box('stsd', [0, 0, 0, 0, 0, 0, 0, 1], box(entry, Buffer.alloc(fields), ...children));
  const trak = box('trak', box('tkhd', Buffer.alloc(84)), box('mdia', box('minf', box('stbl', stsd, box('stts', Buffer.alloc(8))))));
  return Buffer.concat([box('ftyp', Buffer.from('iso5\0\0\0\x01iso6mp41', 'latin1')), box('moov', box('mvhd', Buffer.alloc(100)), trak)]);
}
const video = (entry: string, ...children: Buffer[]) => initSegment(entry, 78, ...children);
const pasp = box('pasp', [0, 0, 0, 1, 0, 0, 0, 1]);

// Decoder configuration records as ffmpeg 5.1 wrote them for this project's ladder (192x144 rung).
const AVCC = Buffer.from('0142c00bffe100176742c00bda0c13b011000003000100000300320f142aa001000468ce3c80', 'hex');
const HVCC = Buffer.from('0101600000009000000000003cf000fcfdf8f800000f04a00001001840010c01ffff016000000300', 'hex');
const AV1C = Buffer.from('81000d000a0b00000003bdfc7805f00480', 'hex');

describe('readVideoConfig', () => {
  it('reads the configuration records of real x264, x265 and SVT-AV1 init segments', () => {
    expect(codecString(readVideoConfig(video('avc1', box('avcC', AVCC), pasp)))).toBe('avc1.42c00b');
    expect(codecString(readVideoConfig(video('hvc1', box('hvcC', HVCC), box('fiel', [1, 0]), pasp)))).toBe('hvc1.1.6.L60.90');
    expect(codecString(readVideoConfig(video('av01', box('av1C', AV1C), pasp)))).toBe('av01.0.00M.08');
    // 0x2d: profile 1, level 13; 0xcd: high tier, high bit depth.
    expect(codecString(readVideoConfig(video('av01', box('av1C', [0x81, 0x2d, 0xcd, 0]))))).toBe('av01.1.13H.10');
  });

  it('reads a 64-bit box size and a last box sized 0 (to the end of the file)', () => {
    const hvcc = box('hvcC', HVCC);
    const entry = box('hvc1', Buffer.alloc(78), hvcc);
    const large = Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('stsd', 'latin1'), Buffer.alloc(8), Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]), entry]);
    large.writeBigUInt64BE(BigInt(large.length), 8);
    const toEnd = Buffer.concat([Buffer.from([0, 0, 0, 0]), Buffer.from('moov', 'latin1'), box('trak', box('mdia', box('minf', box('stbl', large))))]);
    expect(codecString(readVideoConfig(toEnd))).toBe('hvc1.1.6.L60.90');
  });

  it('fails with a clear message on what it cannot read', () => {
    expect(() => readVideoConfig(initSegment('mp4a', 28, box('esds', Buffer.alloc(30))))).toThrow(/no avc1, avc3, hvc1, hev1 or av01 sample entry/);
    expect(() => readVideoConfig(video('hvc1', pasp))).toThrow('hvc1 sample entry without its hvcC box');
    expect(() => readVideoConfig(video('hvc1', box('hvcC', HVCC.subarray(0, 12))))).toThrow(/hvcC is 12 bytes/);
    expect(() => readVideoConfig(video('av01', box('av1C', [0x80, 0, 0x0d, 0])))).toThrow(/av1C marker\/version is 0x80/);
    expect(() => readVideoConfig(video('avc1', box('avcC', AVCC)).subarray(0, 200))).toThrow(/truncated moov box/);
  });
});

describe('finishManifest', () => {
  const mpd = [
    '<?xml version="1.0" encoding="utf-8"?>',
    '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">',
    '\t<Period id="0" start="PT0.0S">',
    '\t\t<AdaptationSet id="1" contentType="video" segmentAlignment="true" bitstreamSwitching="true">',
    '\t\t\t<Representation id="2" mimeType="video/mp4" codecs="hvc1" bandwidth="60000" width="192" height="144" sar="1:1"/>',
    '\t\t\t<Representation id="12" mimeType="video/mp4" codecs="hvc1" bandwidth="87000"/>',
    '\t\t</AdaptationSet>',
    '\t\t<AdaptationSet id="2" contentType="audio" bitstreamSwitching="true">',
    '\t\t\t<Representation id="6" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000"/>',
    '\t\t</AdaptationSet>',
    '\t</Period>',
    '</MPD>',
  ].join('\n');
  const parse = (xml: string) => new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (n: string) => ['AdaptationSet', 'Representation'].includes(n) }).parse(xml) as {
    MPD: { Period: { AdaptationSet: { id: string; bitstreamSwitching: string; segmentAlignment?: string; Representation: Record<string, string>[] }[] } };
  };

  it('replaces the codecs of the named Representations only and keeps every other attribute', () => {
    const out = parse(finishManifest(parseManifest(mpd), new Map([['2', 'hvc1.1.6.L60.90'], ['12', 'hvc1.1.6.L63.90']])));
    const reps = out.MPD.Period.AdaptationSet.flatMap((a) => a.Representation);
    expect(reps.map((r) => [r.id, r.codecs])).toEqual([['2', 'hvc1.1.6.L60.90'], ['12', 'hvc1.1.6.L63.90'], ['6', 'mp4a.40.2']]);
    expect(reps[0]).toMatchObject({ mimeType: 'video/mp4', bandwidth: '60000', width: '192', height: '144', sar: '1:1' });
    expect(out.MPD.Period.AdaptationSet[0]!.segmentAlignment).toBe('true');
  });

  it('says bitstreamSwitching="false": every rendition has its own init segment', () => {
    const out = parse(finishManifest(parseManifest(mpd), new Map()));
    expect(out.MPD.Period.AdaptationSet.map((a) => a.bitstreamSwitching)).toEqual(['false', 'false']);
  });

  it('refuses a manifest that is not XML', () => {
    expect(() => parseManifest('<MPD><Period>')).toThrow(/not well-formed/);
  });
});
