/**
 * Encrypted renditions: before a ladder (or the preview) is published, its fMP4 segments are
 * encrypted in the work directory with CENC (shared/crypto/cenc.ts) under the video's rendition
 * key, and its manifest and media playlists say so — DASH ContentProtection (mp4protection with
 * the default KID, and ClearKey), HLS `EXT-X-KEY` METHOD=SAMPLE-AES-CTR with KEYFORMAT
 * org.w3.clearkey — so dash.js and hls.js fetch the key from the key URL (`<dir>/clearkey`,
 * functions/stream) and decrypt themselves, while the media edge sends the files as stored.
 *
 * The work directory is published only after this returns, so a crash part-way leaves a work
 * directory the retry discards and redoes; a file is replaced by rename, never half-written.
 */
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { XMLSerializer, type Element } from '@xmldom/xmldom';
import { CencError, encryptInitSegment, encryptMediaSegment, keyIdOf } from '../crypto/cenc.js';
import { MANIFEST_NAME, initSegmentName } from './ffmpeg-command.js';
import { MASTER_NAME, parseManifest } from './playlists.js';

/** The key URL's last segment, inside the published directory (the playlist's token covers it). */
export const CLEARKEY_NAME = 'clearkey';
const CLEARKEY_SCHEME = 'urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e';
const CENC_NS = 'urn:mpeg:cenc:2013';

const segmentsOf = (names: string[], index: number) => names.filter((n) => n.startsWith(`seg_${index}_`) && n.endsWith('.m4s'));

async function replace(file: string, bytes: Buffer | string): Promise<void> {
  await writeFile(`${file}.enc.tmp`, bytes);
  await rename(`${file}.enc.tmp`, file);
}

/**
 * Encrypt every stream in `dir` (each `init_<n>.m4s` with its `seg_<n>_*.m4s`) under `key`
 * (16 bytes), and signal it in the manifest and media playlists; the key id is the video id.
 */
export async function encryptRenditions(dir: string, videoId: string, key: Buffer): Promise<void> {
  const kid = keyIdOf(videoId);
  const names = await readdir(dir);
  const indexes = names.flatMap((n) => /^init_(\d+)\.m4s$/.exec(n)?.[1] ?? []).map(Number);
  if (indexes.length === 0) throw new CencError('no init segments to encrypt');
  for (const index of indexes) {
    const initFile = path.join(dir, initSegmentName(index));
    let encrypted;
    try {
      encrypted = encryptInitSegment(await readFile(initFile), kid);
    } catch (err) {
      throw err instanceof CencError ? new CencError(`stream ${index}: ${err.message}`) : err;
    }
    for (const name of segmentsOf(names, index)) {
      const file = path.join(dir, name);
      await replace(file, encryptMediaSegment(await readFile(file), key, encrypted.sample));
    }
    // The init segment last: until it is replaced the directory is recognisably unfinished.
    await replace(initFile, encrypted.init);
  }

  const manifestFile = path.join(dir, MANIFEST_NAME);
  const doc = parseManifest(await readFile(manifestFile, 'utf8'));
  doc.documentElement!.setAttribute('xmlns:cenc', CENC_NS);
  for (const set of Array.from(doc.getElementsByTagNameNS('*', 'AdaptationSet')) as Element[]) {
    const mp4 = doc.createElementNS(doc.documentElement!.namespaceURI, 'ContentProtection');
    mp4.setAttribute('schemeIdUri', 'urn:mpeg:dash:mp4protection:2011');
    mp4.setAttribute('value', 'cenc');
    mp4.setAttributeNS(CENC_NS, 'cenc:default_KID', videoId);
    const clearKey = doc.createElementNS(doc.documentElement!.namespaceURI, 'ContentProtection');
    clearKey.setAttribute('schemeIdUri', CLEARKEY_SCHEME);
    clearKey.setAttribute('value', 'ClearKey1.0');
    // ContentProtection comes first in an AdaptationSet (ISO/IEC 23009-1's element order).
    set.insertBefore(clearKey, set.firstChild);
    set.insertBefore(mp4, clearKey);
  }
  await replace(manifestFile, new XMLSerializer().serializeToString(doc));

  // hls.js wants the key id in the tag; the URI only has to be a data: URI (the license URL is the player's setting).
  const keyTag = `#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT="org.w3.clearkey",KEYFORMATVERSIONS="1",URI="data:text/plain;base64,${kid.toString('base64')}",KEYID=0x${kid.toString('hex')}`;
  for (const name of names.filter((n) => n.endsWith('.m3u8') && n !== MASTER_NAME)) {
    const file = path.join(dir, name);
    const text = await readFile(file, 'utf8');
    if (!text.includes('#EXT-X-MAP')) continue;
    await replace(file, text.replace(/^#EXT-X-MAP/m, `${keyTag}\n#EXT-X-MAP`));
  }
}
