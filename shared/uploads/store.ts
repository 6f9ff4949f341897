/**
 * The upload staging store: @tus/file-store in UPLOAD_DIR (`<id>` data file +
 * `<id>.json` info), shared by tus-upload and finalize.
 */
import { createHash } from 'node:crypto';
import { mkdir, truncate } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, Transform, type Readable } from 'node:stream';
import { FileStore } from '@tus/file-store';
import type { Upload } from '@tus/server';
import type { Config } from '../platform/config.js';
import { CHECKSUM_MISMATCH, expectedChecksum } from './checksum.js';
import { uploadBytesTotal } from './metrics.js';
import { UPLOAD_OWNER_KEY, withoutOwner } from './owner.js';

export class UploadStore extends FileStore {
  private readonly bytes = uploadBytesTotal();

  constructor(options: ConstructorParameters<typeof FileStore>[0]) {
    super(options);
    this.extensions.push('checksum'); // advertised in Tus-Extension; see write()
  }

  /** Path of an upload's data file (ids are validated UUIDs before they get here). */
  dataPath(id: string): string {
    return path.join(this.directory, id);
  }

  /**
   * What tus sees: HEAD echoes an upload's metadata, which MUST be exactly what the client
   * sent, so the server-side owner (kept in the info file) is hidden here.
   */
  override async getUpload(id: string): Promise<Upload> {
    return withoutOwner(await super.getUpload(id));
  }

  /** The upload (as tus sees it) and who created it, for finalize. */
  async getOwnedUpload(id: string): Promise<{ upload: Upload; owner: string | null }> {
    const upload = await super.getUpload(id);
    return { upload: withoutOwner(upload), owner: upload.metadata?.[UPLOAD_OWNER_KEY] ?? null };
  }

  /** With an Upload-Checksum (./checksum.ts): hash while writing; keep the chunk only when it matches. */
  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const checksum = expectedChecksum();
    if (!checksum) {
      const end = await super.write(readable, id, offset);
      this.bytes.inc(end - offset);
      return end;
    }
    const hash = createHash(checksum.algorithm);
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        done(null, chunk);
      },
    });
    pipeline(readable, hashing, () => undefined); // a broken request destroys `hashing`, which fails the write below
    let end: number;
    try {
      end = await super.write(hashing, id, offset);
    } catch (err) {
      await truncate(this.dataPath(id), offset); // an unverifiable partial chunk is not kept
      throw err;
    }
    if (!hash.digest().equals(checksum.digest)) {
      await truncate(this.dataPath(id), offset);
      throw CHECKSUM_MISMATCH;
    }
    this.bytes.inc(end - offset);
    return end;
  }
}

export async function openUploadStore(config: Pick<Config, 'uploadDir' | 'uploadExpiryHours'>): Promise<UploadStore> {
  // FileStore creates its directory without waiting and throws from a callback on failure: do it first.
  await mkdir(config.uploadDir, { recursive: true });
  return new UploadStore({ directory: config.uploadDir, expirationPeriodInMilliseconds: config.uploadExpiryHours * 3_600_000 });
}
