/**
 * The tus checksum extension: a PATCH (or a creation-with-upload POST) may carry
 * `Upload-Checksum: <algorithm> <base64 digest>` of its body. The store hashes the
 * bytes as they are written; on a mismatch — or when the request breaks off, so
 * the chunk cannot be verified — the file is truncated back to where the chunk
 * began and the answer is 460: nothing unverified is kept. Per-chunk integrity
 * matters on the flaky networks clinics upload over; finalize's sha256 still
 * covers the whole file.
 *
 * The expectation travels from the HTTP handler to the store's write() in an
 * AsyncLocalStorage: @tus/server gives the store no access to the request.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { AppError } from '../platform/errors.js';

/** sha1 is the spec's MUST; sha256 for clients that want a modern hash; md5 because many clients send it. */
export const CHECKSUM_ALGORITHMS = ['sha1', 'sha256', 'md5'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export interface ExpectedChecksum {
  algorithm: ChecksumAlgorithm;
  digest: Buffer;
}

const DIGEST_BYTES: Record<ChecksumAlgorithm, number> = { sha1: 20, sha256: 32, md5: 16 };

/** The header's expectation; 400 when it is malformed or names an algorithm we do not offer (the tus handler adds Tus-Resumable). */
export function parseUploadChecksum(header: string): ExpectedChecksum {
  const match = /^([a-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/.exec(header.trim());
  const algorithm = match?.[1] as ChecksumAlgorithm | undefined;
  if (!match || !algorithm || !CHECKSUM_ALGORITHMS.includes(algorithm)) {
    throw new AppError(400, 'invalid_checksum', `Upload-Checksum must be "<algorithm> <base64 digest>" with an algorithm of ${CHECKSUM_ALGORITHMS.join(', ')}`);
  }
  const digest = Buffer.from(match[2]!, 'base64');
  if (digest.length !== DIGEST_BYTES[algorithm]) {
    throw new AppError(400, 'invalid_checksum', `Upload-Checksum: a ${algorithm} digest is ${DIGEST_BYTES[algorithm]} bytes`);
  }
  return { algorithm, digest };
}

const expected = new AsyncLocalStorage<ExpectedChecksum>();

export function withExpectedChecksum<T>(checksum: ExpectedChecksum, work: () => Promise<T>): Promise<T> {
  return expected.run(checksum, work);
}

/** The checksum the request being handled declared for its body, if any. */
export function expectedChecksum(): ExpectedChecksum | undefined {
  return expected.getStore();
}

/** What @tus/server answers for a chunk whose checksum does not match (it passes `status_code` errors through). */
export const CHECKSUM_MISMATCH = { status_code: 460, body: 'Checksum Mismatch\n' };
