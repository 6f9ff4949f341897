/** What stored ciphertext must look like to a test: high entropy, and nothing of the clear formats. */

/** Shannon entropy in bits per byte. */
export function entropy(b: Buffer): number {
  const counts = new Array<number>(256).fill(0);
  for (const x of b) counts[x]!++;
  return -counts.reduce((h, c) => (c ? h + (c / b.length) * Math.log2(c / b.length) : h), 0);
}

/**
 * Byte strings every clear file ffmpeg writes here holds: the MP4 brand box (`ftypisom`), x264's
 * settings string (in every H.264 stream it encodes), a JPEG's JFIF header. Five bytes or more each,
 * so random bytes of a few MB hold one by chance about once in 10^5 files.
 */
const CLEAR_MARKERS = ['ftypisom', 'x264 - core', 'JFIF\0'];

/**
 * The clear markers found in `bytes`, with the JPEG start of image at its head; and, given the
 * file's plaintext, its own ftyp and moov box headers with the 12 bytes after each, and its first 16
 * bytes (a JPEG's SOI and JFIF segment).
 */
export function clearMarkers(bytes: Buffer, plain?: Buffer): string[] {
  const found = CLEAR_MARKERS.filter((s) => bytes.includes(Buffer.from(s, 'latin1')));
  if (bytes.subarray(0, 3).equals(Buffer.from([0xff, 0xd8, 0xff]))) found.push('JPEG SOI');
  if (!plain) return found;
  const heads = ['ftyp', 'moov'].flatMap((box) => {
    const at = plain.indexOf(box, 0, 'latin1');
    return at < 4 ? [] : [{ name: `the ${box} box`, bytes: plain.subarray(at - 4, at + 16) }];
  });
  heads.push({ name: 'the first 16 bytes', bytes: plain.subarray(0, 16) });
  for (const head of heads) if (bytes.includes(head.bytes)) found.push(head.name);
  return found;
}
