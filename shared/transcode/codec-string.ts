/**
 * RFC 6381 `codecs` strings of the video renditions, read from what the encoder
 * wrote: the decoder configuration record in the init segment's sample entry
 * (avcC, hvcC, av1C) holds exactly the fields these strings are made of, the
 * same bytes a player configures its decoder with.
 *
 * Not ffmpeg's strings: the 5.1 dash muxer writes a bare `hvc1` for HEVC, which
 * AVPlayer and `MediaSource.isTypeSupported` (hls.js, dash.js) cannot evaluate.
 * Not ffprobe: it reports profile and level, but not the HEVC tier,
 * compatibility and constraint flags, the H.264 constraint_set flags or the AV1
 * tier, and needs a media segment besides the init segment.
 *
 * - H.264 (RFC 6381 §3.3): `avc1.PPCCLL`, profile_idc, constraint_set flags and
 *   level_idc as two hex digits each.
 * - HEVC (ISO/IEC 14496-15 Annex E): `hvc1.[A-C]<profile>.<compat>.<L|H><level>.<constraint bytes>`;
 *   compatibility flags bit-reversed in hex, level_idc in decimal (93 = 3.1),
 *   the six constraint bytes in hex with trailing zero bytes omitted (the first
 *   is always written: `hvc1.1.6.L93.B0`, `hvc1.2.4.L120.B0`).
 * - AV1 (AV1 ISOBMFF binding, codecs parameter): `av01.<profile>.<level><M|H>.<bit depth>`.
 *   The optional colour fields are left out: our encode is always 4:2:0 SDR
 *   (`format=yuv420p`), colour does not decide whether a player can decode, and
 *   some MSE implementations refuse the long form.
 */

export interface AvcConfig {
  sampleEntry: 'avc1' | 'avc3';
  profileIdc: number;
  /** constraint_set0..5 flags, the byte between profile and level. */
  constraintFlags: number;
  levelIdc: number;
}

export interface HevcConfig {
  sampleEntry: 'hvc1' | 'hev1';
  profileSpace: number;
  highTier: boolean;
  profileIdc: number;
  /** general_profile_compatibility_flags as stored (flag[0] is the most significant bit). */
  compatibilityFlags: number;
  /** The six bytes of general_constraint_indicator_flags, progressive_source_flag first. */
  constraintBytes: number[];
  levelIdc: number;
}

export interface Av1Config {
  sampleEntry: 'av01';
  profile: number;
  levelIdx: number;
  highTier: boolean;
  highBitdepth: boolean;
  twelveBit: boolean;
}

export type VideoConfig = AvcConfig | HevcConfig | Av1Config;

const hex2 = (n: number) => n.toString(16).padStart(2, '0');

/** Bit j of the result is bit 31-j of `n`. */
function reverseBits32(n: number): number {
  let out = 0;
  for (let j = 0; j < 32; j++) out = (out << 1) | ((n >>> j) & 1);
  return out >>> 0;
}

export function codecString(c: VideoConfig): string {
  switch (c.sampleEntry) {
    case 'avc1':
    case 'avc3':
      return `${c.sampleEntry}.${hex2(c.profileIdc)}${hex2(c.constraintFlags)}${hex2(c.levelIdc)}`;
    case 'hvc1':
    case 'hev1': {
      const space = ['', 'A', 'B', 'C'][c.profileSpace] ?? '';
      const compat = reverseBits32(c.compatibilityFlags).toString(16).toUpperCase();
      let last = c.constraintBytes.length;
      while (last > 1 && c.constraintBytes[last - 1] === 0) last--;
      const constraints = c.constraintBytes.slice(0, last).map((b) => hex2(b).toUpperCase());
      return [c.sampleEntry, `${space}${c.profileIdc}`, compat, `${c.highTier ? 'H' : 'L'}${c.levelIdc}`, ...constraints].join('.');
    }
    case 'av01': {
      // AV1 §6.4.2 (color_config): twelve_bit is only read for profile 2.
      const bitDepth = c.highBitdepth ? (c.profile === 2 && c.twelveBit ? 12 : 10) : 8;
      return `av01.${c.profile}.${String(c.levelIdx).padStart(2, '0')}${c.highTier ? 'H' : 'M'}.${String(bitDepth).padStart(2, '0')}`;
    }
  }
}

/** Boxes on the path from the file's top level to the sample entries. */
const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl']);
/** Fields of a VisualSampleEntry before its child boxes (ISO/IEC 14496-12 §12.1.3). */
const VISUAL_SAMPLE_ENTRY_FIELDS = 78;
/** stsd's version/flags and entry_count before the first sample entry. */
const STSD_FIELDS = 8;
const CONFIG_BOX: Record<VideoConfig['sampleEntry'], string> = { avc1: 'avcC', avc3: 'avcC', hvc1: 'hvcC', hev1: 'hvcC', av01: 'av1C' };

interface Box {
  type: string;
  /** Payload: the bytes after the box header. */
  body: Uint8Array;
}

function* boxes(bytes: Uint8Array): Generator<Box> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + 8 <= bytes.length) {
    let size = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    let header = 8;
    if (size === 1) {
      if (at + 16 > bytes.length) break;
      size = Number(view.getBigUint64(at + 8));
      header = 16;
    } else if (size === 0) {
      size = bytes.length - at;
    }
    if (size < header || at + size > bytes.length) throw new Error(`truncated ${type} box in the init segment`);
    yield { type, body: bytes.subarray(at + header, at + size) };
    at += size;
  }
}

/** The first video sample entry (and its configuration record) under moov/trak/…/stsd. */
function findSampleEntry(bytes: Uint8Array): { entry: VideoConfig['sampleEntry']; config: Uint8Array } | null {
  for (const box of boxes(bytes)) {
    if (CONTAINERS.has(box.type)) {
      const found = findSampleEntry(box.body);
      if (found) return found;
    } else if (box.type === 'stsd') {
      for (const entry of boxes(box.body.subarray(STSD_FIELDS))) {
        if (!(entry.type in CONFIG_BOX)) continue;
        const name = entry.type as VideoConfig['sampleEntry'];
        for (const child of boxes(entry.body.subarray(VISUAL_SAMPLE_ENTRY_FIELDS))) {
          if (child.type === CONFIG_BOX[name]) return { entry: name, config: child.body };
        }
        throw new Error(`${name} sample entry without its ${CONFIG_BOX[name]} box`);
      }
    }
  }
  return null;
}

function need(config: Uint8Array, length: number, box: string): void {
  if (config.length < length) throw new Error(`${box} is ${config.length} bytes, shorter than its fixed fields`);
}

/** The decoder configuration of an fMP4 init segment's video track. */
export function readVideoConfig(initSegment: Uint8Array): VideoConfig {
  const found = findSampleEntry(initSegment);
  if (!found) throw new Error('the init segment has no avc1, avc3, hvc1, hev1 or av01 sample entry');
  const { entry, config: c } = found;
  switch (entry) {
    case 'avc1':
    case 'avc3':
      // AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): version, profile, compatibility, level.
      need(c, 4, 'avcC');
      return { sampleEntry: entry, profileIdc: c[1]!, constraintFlags: c[2]!, levelIdc: c[3]! };
    case 'hvc1':
    case 'hev1':
      // HEVCDecoderConfigurationRecord (§8.3.3.1): version; space(2) tier(1) profile(5); compat(32); constraints(48); level.
      need(c, 13, 'hvcC');
      return {
        sampleEntry: entry,
        profileSpace: c[1]! >> 6,
        highTier: ((c[1]! >> 5) & 1) === 1,
        profileIdc: c[1]! & 0x1f,
        compatibilityFlags: ((c[2]! << 24) | (c[3]! << 16) | (c[4]! << 8) | c[5]!) >>> 0,
        constraintBytes: [...c.subarray(6, 12)],
        levelIdc: c[12]!,
      };
    case 'av01':
      // AV1CodecConfigurationRecord: marker(1) version(7); profile(3) level(5); tier high_bitdepth twelve_bit …
      need(c, 4, 'av1C');
      if (c[0] !== 0x81) throw new Error(`av1C marker/version is 0x${hex2(c[0]!)}, not 0x81`);
      return {
        sampleEntry: entry,
        profile: c[1]! >> 5,
        levelIdx: c[1]! & 0x1f,
        highTier: (c[2]! & 0x80) !== 0,
        highBitdepth: (c[2]! & 0x40) !== 0,
        twelveBit: (c[2]! & 0x20) !== 0,
      };
  }
}
