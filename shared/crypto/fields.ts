/**
 * meta.json's PHI fields at rest: `filename` and `metadata` (title, description, the user's own
 * fields) are sealed together as one AES-256-GCM blob under the video's key (derived for 'meta'),
 * bound to the video id. The stored document keeps `filename: ""` and `metadata: {}` beside
 * `sealed`, so every field a reader needs without PHI (status, sizes, outputs) stays as it was.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { AppError } from '../platform/errors.js';

export interface SealedFields {
  alg: 'A256GCM';
  /** base64 of iv(12) ‖ ciphertext ‖ tag(16). */
  data: string;
}

export interface PhiFields {
  filename: string;
  metadata: Record<string, unknown>;
}

const aad = (videoId: string) => Buffer.from(`pulsevault-meta-v1\0${videoId}`);

export function sealFields(key: Buffer, videoId: string, fields: PhiFields): SealedFields {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv).setAAD(aad(videoId));
  const body = Buffer.concat([iv, c.update(JSON.stringify({ filename: fields.filename, metadata: fields.metadata })), c.final(), c.getAuthTag()]);
  return { alg: 'A256GCM', data: body.toString('base64') };
}

export function openFields(key: Buffer, videoId: string, sealed: SealedFields): PhiFields {
  const body = Buffer.from(sealed.data, 'base64');
  try {
    const d = createDecipheriv('aes-256-gcm', key, body.subarray(0, 12)).setAAD(aad(videoId));
    d.setAuthTag(body.subarray(body.length - 16));
    return JSON.parse(Buffer.concat([d.update(body.subarray(12, body.length - 16)), d.final()]).toString('utf8')) as PhiFields;
  } catch {
    throw new AppError(500, 'meta_corrupt', `the sealed fields of video ${videoId} do not open`);
  }
}
