/**
 * The original's content checksum (`meta.checksum`, `sha256:<hex>`): computed
 * once at finalize, re-computed by the scrub. Streamed, so memory stays flat
 * for a 20 GiB original.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export interface ChecksumOptions {
  chunkBytes?: number;
  /** Called after each chunk is hashed; the next read waits for it (the scrub paces itself here). */
  onChunk?: (bytes: number) => void | Promise<void>;
}

export async function fileChecksum(file: string, options: ChecksumOptions = {}): Promise<{ checksum: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: options.chunkBytes ?? 1024 * 1024 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
    await options.onChunk?.(chunk.length);
  }
  return { checksum: `sha256:${hash.digest('hex')}`, size };
}
