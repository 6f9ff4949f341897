/**
 * The key-encryption key (KEK): what wraps every video's data key. One small interface, so the
 * file secret (`media-kek`) can later be replaced by a KMS without touching callers:
 *
 * - HashiCorp Vault Transit: `wrap` = `POST transit/encrypt/<key>` with `context` (derived keys),
 *   `kekId` = the key's version (`vault:v3`); `unwrap` = `transit/decrypt`; rotation is Vault's
 *   `rotate`, followed by `pulsevault keys rotate` (rewrap every data key under the newest version).
 * - PKCS#11 (an HSM): `wrap` = C_WrapKey with CKM_AES_KEY_WRAP_KWP, `kekId` = the key's CKA_LABEL.
 *
 * `context` (the video id) is bound into the wrap, so a wrapped key copied onto another video does
 * not open. No method ever puts a key, wrapped or not, into an error message.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { AppError } from '../platform/errors.js';

export interface WrappedKey {
  /** Which KEK wrapped it (not secret: it says which key to ask for). */
  kekId: string;
  alg: 'A256GCMKW';
  /** base64 of iv(12) ‖ ciphertext ‖ tag(16). */
  wrapped: string;
}

export interface KeyEncryptionKey {
  /** The KEK new wraps use. */
  readonly currentId: string;
  /** Whether this provider can unwrap what `kekId` wrapped (current or an earlier KEK listed for reading). */
  knows(kekId: string): boolean;
  wrap(dataKey: Buffer, context: string): Promise<WrappedKey>;
  unwrap(wrapped: WrappedKey, context: string): Promise<Buffer>;
}

/** A wrapped key that does not open: wrong KEK, another video's key, or a tampered file. Says nothing of the key. */
export class KeyUnwrapError extends AppError {
  constructor(readonly kekId: string, reason: 'unknown_kek' | 'does_not_open') {
    super(500, 'key_unavailable', reason === 'unknown_kek' ? `a data key is wrapped under KEK "${kekId}", which is not configured` : `a data key wrapped under KEK "${kekId}" does not open with it`);
  }
}

const aad = (kekId: string, context: string) => Buffer.from(`pulsevault-dek-v1\0${kekId}\0${context}`);

/** KEKs held in memory from secrets (MEDIA_KEK and MEDIA_KEK_PREVIOUS): AES-256-GCM key wrap. */
export class SecretKek implements KeyEncryptionKey {
  private readonly keys: Map<string, Buffer>;

  constructor(
    current: { id: string; key: Buffer },
    previous: { id: string; key: Buffer }[] = [],
  ) {
    this.currentId = current.id;
    this.keys = new Map([...previous.map((k) => [k.id, k.key] as const), [current.id, current.key]]);
  }

  readonly currentId: string;

  knows(kekId: string): boolean {
    return this.keys.has(kekId);
  }

  async wrap(dataKey: Buffer, context: string): Promise<WrappedKey> {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.currentId)!, iv).setAAD(aad(this.currentId, context));
    const body = Buffer.concat([iv, cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
    return { kekId: this.currentId, alg: 'A256GCMKW', wrapped: body.toString('base64') };
  }

  async unwrap(w: WrappedKey, context: string): Promise<Buffer> {
    const kek = this.keys.get(w.kekId);
    if (!kek) throw new KeyUnwrapError(w.kekId, 'unknown_kek');
    const body = Buffer.from(typeof w.wrapped === 'string' ? w.wrapped : '', 'base64');
    try {
      if (w.alg !== 'A256GCMKW' || body.length !== 12 + 32 + 16) throw new Error('malformed');
      const decipher = createDecipheriv('aes-256-gcm', kek, body.subarray(0, 12)).setAAD(aad(w.kekId, context));
      decipher.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([decipher.update(body.subarray(12, body.length - 16)), decipher.final()]);
    } catch {
      throw new KeyUnwrapError(w.kekId, 'does_not_open');
    }
  }
}
