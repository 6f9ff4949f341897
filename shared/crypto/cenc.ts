/**
 * Common Encryption (ISO/IEC 23001-7, scheme `cenc`: AES-128-CTR) of the fMP4 (CMAF)
 * segments ffmpeg's dash muxer writes, so players decrypt them themselves (EME ClearKey in
 * dash.js and hls.js) and the media edge still sends the files as they are on disk.
 *
 * Why our own packager: ffmpeg 5.1's mov muxer encrypts, but in fragmented output it writes
 * the sample auxiliary information (senc/saiz/saio) once into the init segment instead of into
 * every moof, which no player (nor ffmpeg itself) can decrypt. Re-muxing is not needed: the
 * sample data keeps its size (CTR), so a segment is rewritten in place with a moof that grows
 * by its senc/saiz/saio and a trun data offset moved by as much.
 *
 * - Init segment: the sample entry (`avc1`, `hvc1`, `mp4a`) becomes `encv`/`enca` with a
 *   `sinf` (frma, schm `cenc`, tenc with the key id and 8-byte IVs); a ClearKey `pssh` listing
 *   the key id goes into the moov, so the browser's `encrypted` event names the key.
 * - Media segment: every sample gets a random 8-byte IV (a re-transcode under the same key
 *   never repeats a keystream). Audio is encrypted whole; video by subsample: each NAL unit's
 *   length prefix and header stay clear (players and Chromium's parser read them), non-VCL NAL
 *   units (SPS, PPS, SEI) stay clear whole, and the protected part of a slice is a whole number
 *   of 16-byte blocks (the remainder stays clear, as Shaka Packager does for devices that want it).
 * - AV1 is refused: its subsample rules (clear frame headers, tiles only) are not implemented.
 */
import { createCipheriv, randomBytes } from 'node:crypto';

/** The ClearKey system id (W3C "Common PSSH box format"), 1077efec-c0b2-4d02-ace3-3c1e52e2fb4b. */
export const CLEARKEY_SYSTEM_ID = Buffer.from('1077efecc0b24d02ace33c1e52e2fb4b', 'hex');
const IV_SIZE = 8;

export type SampleKind = { kind: 'audio' } | { kind: 'avc' | 'hevc'; lengthSize: number };

export class CencError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CencError';
  }
}

interface Box {
  type: string;
  /** Bytes between the box header and the children (a full box's version/flags, a sample entry's fixed fields). */
  prefix: Buffer;
  children: Box[] | null;
  /** A leaf's content. */
  payload: Buffer;
}

const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'moof', 'traf', 'mvex', 'dinf', 'edts', 'sinf', 'schi']);
/** Sample entries we encrypt, and the size of their fixed fields before the child boxes. */
const SAMPLE_ENTRIES: Record<string, number> = { avc1: 78, avc3: 78, hvc1: 78, hev1: 78, av01: 78, mp4a: 28 };
const prefixSize = (type: string) => (type === 'stsd' ? 8 : SAMPLE_ENTRIES[type] ?? 0);
const isContainer = (type: string) => CONTAINERS.has(type) || type === 'stsd' || type in SAMPLE_ENTRIES || type === 'encv' || type === 'enca';

function parseBoxes(buf: Buffer, start = 0, end = buf.length): Box[] {
  const boxes: Box[] = [];
  let at = start;
  while (at < end) {
    if (end - at < 8) throw new CencError('truncated box header');
    const size = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    if (size < 8 || at + size > end) throw new CencError(`box ${JSON.stringify(type)} has a size that does not fit (64-bit sizes are not expected in a segment)`);
    const body = buf.subarray(at + 8, at + size);
    if (isContainer(type)) {
      const p = prefixSize(type);
      boxes.push({ type, prefix: body.subarray(0, p), children: parseBoxes(body, p), payload: Buffer.alloc(0) });
    } else {
      boxes.push({ type, prefix: Buffer.alloc(0), children: null, payload: body });
    }
    at += size;
  }
  return boxes;
}

function serialize(box: Box): Buffer {
  const content = box.children ? Buffer.concat([box.prefix, ...box.children.map(serialize)]) : box.payload;
  const header = Buffer.alloc(8);
  header.writeUInt32BE(8 + content.length, 0);
  header.write(box.type, 4, 'latin1');
  return Buffer.concat([header, content]);
}

const leaf = (type: string, payload: Buffer): Box => ({ type, prefix: Buffer.alloc(0), children: null, payload });
const container = (type: string, children: Box[]): Box => ({ type, prefix: Buffer.alloc(0), children, payload: Buffer.alloc(0) });
/** A full box's version and flags. */
const fullHeader = (version: number, flags: number) => Buffer.from([version, (flags >> 16) & 0xff, (flags >> 8) & 0xff, flags & 0xff]);

function child(box: Box, type: string): Box | undefined {
  return box.children?.find((c) => c.type === type);
}

function walk(boxes: Box[], visit: (box: Box) => void): void {
  for (const b of boxes) {
    visit(b);
    if (b.children) walk(b.children, visit);
  }
}

/** A key id as 16 bytes from a UUID's text (the video id is the key id: it is public, and one key per video). */
export function keyIdOf(uuid: string): Buffer {
  const hex = uuid.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new TypeError('a key id is a UUID');
  return Buffer.from(hex, 'hex');
}

function clearKeyPssh(kid: Buffer): Box {
  // Version 1: the key ids are listed, the system data is empty.
  return leaf('pssh', Buffer.concat([fullHeader(1, 0), CLEARKEY_SYSTEM_ID, Buffer.from([0, 0, 0, 1]), kid, Buffer.alloc(4)]));
}

/**
 * Encrypt an init segment's description: returns the new init segment and what its samples
 * are (for encryptMediaSegment). Throws CencError for a track it cannot encrypt.
 */
export function encryptInitSegment(init: Buffer, kid: Buffer): { init: Buffer; sample: SampleKind } {
  const boxes = parseBoxes(init);
  const moov = boxes.find((b) => b.type === 'moov');
  if (!moov) throw new CencError('init segment without moov');
  let sample: SampleKind | null = null;
  walk([moov], (box) => {
    if (box.type !== 'stsd' || !box.children) return;
    if (box.children.length !== 1) throw new CencError('a track with more than one sample entry');
    const entry = box.children[0]!;
    const original = entry.type;
    if (original === 'encv' || original === 'enca') throw new CencError('init segment is already encrypted');
    if (!(original in SAMPLE_ENTRIES) || original === 'av01') throw new CencError(`cannot encrypt ${JSON.stringify(original)} samples`);
    if (original === 'mp4a') sample = { kind: 'audio' };
    else {
      const config = child(entry, original.startsWith('avc') ? 'avcC' : 'hvcC')?.payload;
      // lengthSizeMinusOne: avcC byte 4, hvcC byte 21 (low two bits).
      const at = original.startsWith('avc') ? 4 : 21;
      if (!config || config.length <= at) throw new CencError(`${original} sample entry without its decoder configuration`);
      sample = { kind: original.startsWith('avc') ? 'avc' : 'hevc', lengthSize: (config[at]! & 3) + 1 };
    }
    const tenc = leaf('tenc', Buffer.concat([fullHeader(0, 0), Buffer.from([0, 0, 1, IV_SIZE]), kid]));
    const schm = leaf('schm', Buffer.concat([fullHeader(0, 0), Buffer.from('cenc', 'latin1'), Buffer.from([0, 1, 0, 0])]));
    const sinf = container('sinf', [leaf('frma', Buffer.from(original, 'latin1')), schm, container('schi', [tenc])]);
    entry.type = original === 'mp4a' ? 'enca' : 'encv';
    entry.children!.push(sinf);
  });
  if (!sample) throw new CencError('init segment without a sample description');
  moov.children!.push(clearKeyPssh(kid));
  return { init: Buffer.concat(boxes.map(serialize)), sample };
}

/** Whether an init segment describes encrypted samples (an `encv`/`enca` sample entry): a ladder encrypted by its transcode, or one migrated. */
export function isEncryptedInit(init: Buffer): boolean {
  let encrypted = false;
  walk(parseBoxes(init), (box) => {
    if (box.type === 'encv' || box.type === 'enca') encrypted = true;
  });
  return encrypted;
}

interface Subsample {
  clear: number;
  protected: number;
}

const isVcl = (kind: 'avc' | 'hevc', header: number) => (kind === 'avc' ? (header & 0x1f) >= 1 && (header & 0x1f) <= 5 : ((header >> 1) & 0x3f) <= 31);

/** The clear/protected split of one video sample, clear runs merged and kept under 65536. */
function videoSubsamples(data: Buffer, kind: 'avc' | 'hevc', lengthSize: number): Subsample[] {
  const headerSize = kind === 'avc' ? 1 : 2;
  const out: Subsample[] = [];
  let clear = 0;
  const push = (c: number, p: number) => {
    clear += c;
    if (p === 0) return;
    while (clear > 0xffff) {
      out.push({ clear: 0xffff, protected: 0 });
      clear -= 0xffff;
    }
    out.push({ clear, protected: p });
    clear = 0;
  };
  let at = 0;
  while (at < data.length) {
    if (at + lengthSize > data.length) throw new CencError('truncated NAL unit length');
    const nalSize = data.readUIntBE(at, lengthSize);
    if (nalSize < headerSize || at + lengthSize + nalSize > data.length) throw new CencError('a NAL unit overruns its sample');
    const body = nalSize - headerSize;
    const protectedBytes = isVcl(kind, data[at + lengthSize]!) ? body - (body % 16) : 0;
    push(lengthSize + nalSize - protectedBytes, protectedBytes);
    at += lengthSize + nalSize;
  }
  push(0, 0);
  while (clear > 0) {
    const c = Math.min(clear, 0xffff);
    out.push({ clear: c, protected: 0 });
    clear -= c;
  }
  return out;
}

interface Run {
  /** The trun box, whose data_offset (payload bytes 8–11) moves when the moof grows. */
  trun: Box;
  dataOffset: number;
  sizes: number[];
}

function readTrun(trun: Box, defaultSize: number | null): Run {
  const p = trun.payload;
  const flags = p.readUIntBE(1, 3);
  if (!(flags & 0x1)) throw new CencError('trun without a data offset');
  const count = p.readUInt32BE(4);
  const dataOffset = p.readInt32BE(8);
  let at = 12 + (flags & 0x4 ? 4 : 0);
  const sizes: number[] = [];
  for (let i = 0; i < count; i++) {
    if (flags & 0x100) at += 4;
    if (flags & 0x200) {
      sizes.push(p.readUInt32BE(at));
      at += 4;
    } else if (defaultSize !== null) sizes.push(defaultSize);
    else throw new CencError('samples without sizes');
    if (flags & 0x400) at += 4;
    if (flags & 0x800) at += 4;
  }
  return { trun, dataOffset, sizes };
}

function tfhdDefaultSize(tfhd: Box): number | null {
  const p = tfhd.payload;
  const flags = p.readUIntBE(1, 3);
  if (flags & 0x1) throw new CencError('tfhd with an explicit base data offset');
  if (!(flags & 0x10)) return null;
  const at = 8 + (flags & 0x2 ? 4 : 0) + (flags & 0x8 ? 4 : 0);
  return p.readUInt32BE(at);
}

/**
 * Encrypt one media segment (any number of moof/mdat pairs) under `key` (16 bytes). The
 * result has the same mdat bytes' positions relative to their moof's end, and the same length
 * plus each moof's senc/saiz/saio.
 */
export function encryptMediaSegment(segment: Buffer, key: Buffer, sample: SampleKind): Buffer {
  if (key.length !== 16) throw new TypeError('a cenc key is 16 bytes');
  const out = Buffer.from(segment);
  const top: { type: string; start: number; size: number }[] = [];
  for (let at = 0; at < segment.length; ) {
    const size = segment.readUInt32BE(at);
    if (size < 8 || at + size > segment.length) throw new CencError('top-level box overruns the segment');
    top.push({ type: segment.toString('latin1', at + 4, at + 8), start: at, size });
    at += size;
  }
  const parts: Buffer[] = [];
  const growth: { at: number; by: number }[] = [];
  let copiedTo = 0;
  for (const box of top) {
    if (box.type !== 'moof') continue;
    const [moof] = parseBoxes(segment, box.start, box.start + box.size) as [Box];
    const trafs = moof.children!.filter((c) => c.type === 'traf');
    if (trafs.length !== 1) throw new CencError('a moof with other than one traf');
    const traf = trafs[0]!;
    if (child(traf, 'senc')) throw new CencError('segment is already encrypted');
    const tfhd = child(traf, 'tfhd');
    const runs = traf.children!.filter((c) => c.type === 'trun');
    if (!tfhd || runs.length !== 1) throw new CencError('a traf with other than one trun');
    const run = readTrun(runs[0]!, tfhdDefaultSize(tfhd));

    // Encrypt the samples in `out` and describe them.
    const entries: Buffer[] = [];
    let dataAt = box.start + run.dataOffset;
    for (const size of run.sizes) {
      if (dataAt + size > segment.length) throw new CencError('a sample overruns the segment');
      const data = out.subarray(dataAt, dataAt + size);
      const iv = randomBytes(IV_SIZE);
      const cipher = createCipheriv('aes-128-ctr', key, Buffer.concat([iv, Buffer.alloc(8)]));
      if (sample.kind === 'audio') {
        cipher.update(data).copy(data);
        entries.push(iv);
      } else {
        const subs = videoSubsamples(data, sample.kind, sample.lengthSize);
        const entry = Buffer.alloc(IV_SIZE + 2 + 6 * subs.length);
        iv.copy(entry, 0);
        entry.writeUInt16BE(subs.length, IV_SIZE);
        let at = 0;
        subs.forEach((s, i) => {
          entry.writeUInt16BE(s.clear, IV_SIZE + 2 + 6 * i);
          entry.writeUInt32BE(s.protected, IV_SIZE + 4 + 6 * i);
          at += s.clear;
          // CTR runs on across the protected parts of one sample.
          if (s.protected > 0) cipher.update(data.subarray(at, at + s.protected)).copy(data, at);
          at += s.protected;
        });
        entries.push(entry);
      }
      cipher.final();
      dataAt += size;
    }

    const count = Buffer.alloc(4);
    count.writeUInt32BE(entries.length);
    const sizes = entries.map((e) => e.length);
    if (sizes.some((s) => s > 0xff)) throw new CencError('a sample with too many subsamples for saiz');
    const uniform = sizes.every((s) => s === sizes[0]);
    const saiz = leaf('saiz', Buffer.concat([fullHeader(0, 0), Buffer.from([uniform ? sizes[0]! : 0]), count, uniform ? Buffer.alloc(0) : Buffer.from(sizes)]));
    const saio = leaf('saio', Buffer.concat([fullHeader(0, 0), Buffer.from([0, 0, 0, 1]), Buffer.alloc(4)]));
    const senc = leaf('senc', Buffer.concat([fullHeader(0, sample.kind === 'audio' ? 0 : 0x2), count, ...entries]));
    traf.children!.push(saiz, saio, senc);

    // The moof grew: move the trun's data offset, and point saio at senc's first entry.
    const grown = serialize(moof).length - box.size;
    run.trun.payload = Buffer.from(run.trun.payload);
    run.trun.payload.writeInt32BE(run.dataOffset + grown, 8);
    const before = (b: Box) => serialize(b).length;
    const trafStart = 8 + moof.children!.slice(0, moof.children!.indexOf(traf)).reduce((n, b) => n + before(b), 0);
    const sencStart = trafStart + 8 + traf.children!.slice(0, -1).reduce((n, b) => n + before(b), 0);
    saio.payload.writeUInt32BE(sencStart + 8 + 4 + 4, 8);

    parts.push(out.subarray(copiedTo, box.start), serialize(moof));
    growth.push({ at: box.start, by: grown });
    copiedTo = box.start + box.size;
  }
  if (parts.length === 0) throw new CencError('a media segment without moof');
  for (const sidx of top.filter((b) => b.type === 'sidx')) growSidx(out, sidx, growth);
  parts.push(out.subarray(copiedTo));
  return Buffer.concat(parts);
}

/** A segment index names each subsegment's byte size: the ones whose moof grew grow by as much (in `out`, in place). */
function growSidx(out: Buffer, sidx: { start: number; size: number }, growth: { at: number; by: number }[]): void {
  const p = sidx.start + 8;
  const version = out[p]!;
  let at = p + 4 + 8 + (version === 0 ? 8 : 16);
  const firstOffset = version === 0 ? out.readUInt32BE(at - 4) : Number(out.readBigUInt64BE(at - 8));
  const count = out.readUInt16BE(at + 2);
  at += 4;
  let rangeStart = sidx.start + sidx.size + firstOffset;
  for (let i = 0; i < count; i++, at += 12) {
    const word = out.readUInt32BE(at);
    const size = word & 0x7fffffff;
    const by = growth.filter((g) => g.at >= rangeStart && g.at < rangeStart + size).reduce((n, g) => n + g.by, 0);
    out.writeUInt32BE(((word & 0x80000000) | (size + by)) >>> 0, at);
    rangeStart += size;
  }
}
