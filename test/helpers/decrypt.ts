import type { EncryptedFile } from '../../shared/crypto/chunked.js';

/** Plaintext bytes start..end (inclusive) of an encrypted file, in one buffer (the service writes the windows as they come). */
export async function decryptRange(file: EncryptedFile, start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const window of file.range(start, end)) {
    parts.push(Buffer.from(window.bytes));
    window.release();
  }
  return Buffer.concat(parts);
}
