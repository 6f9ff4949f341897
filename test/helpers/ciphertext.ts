/** What stored ciphertext must look like to a test: high entropy, and none of the clear formats' markers. */

/** Shannon entropy in bits per byte. */
export function entropy(b: Buffer): number {
  const counts = new Array<number>(256).fill(0);
  for (const x of b) counts[x]!++;
  return -counts.reduce((h, c) => (c ? h + (c / b.length) * Math.log2(c / b.length) : h), 0);
}

/**
 * The clear MP4 and JPEG markers found in `bytes`: MP4 box types (an ffmpeg-written file has every
 * one of them), the JPEG start of image at its head, and the JFIF (APP0) and Lavc (ffmpeg's comment)
 * strings of every JPEG ffmpeg writes. Four-byte strings, so random bytes of a few hundred KB hold
 * none by chance (about 1 in 10 000); the SOI is looked for only where a JPEG has it.
 */
export function clearMarkers(bytes: Buffer): string[] {
  const found = ['ftyp', 'moov', 'mdat', 'mvhd', 'trak', 'avcC', 'JFIF', 'Lavc'].filter((s) => bytes.includes(Buffer.from(s, 'latin1')));
  if (bytes.subarray(0, 3).equals(Buffer.from([0xff, 0xd8, 0xff]))) found.push('JPEG SOI');
  return found;
}
