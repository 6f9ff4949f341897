/**
 * Per-video data keys: a random 256-bit key per video, made at finalize, wrapped by the KEK
 * (./kek.ts) and kept as one small file `KEY_DIR/<videoId>.json` ({version, videoId, kekId, alg,
 * wrapped}). The media itself is encrypted under keys derived from it (HKDF, one per purpose).
 *
 * The key files live apart from VIDEO_DIR on purpose: a copy of a video's folder (a snapshot, an
 * rsync backup, a replaced disk) holds ciphertext only, and deleting the key file (crypto-shredding,
 * shared/lifecycle/dispose.ts) makes every such copy undecryptable. Copies of KEY_DIR itself are what
 * must stay few and short-lived (docs/hipaa.md).
 *
 * Each key file is written atomically (temp → fsync → rename → fsync dir), so a rotation killed at
 * any instant leaves every file whole, under the old KEK or the new one.
 *
 * `KEY_DIR/.kek-<id>.json` holds a check value wrapped under each KEK in use: start-up unwraps
 * them all, so a wrong or missing KEK stops a process with one line instead of failing per video.
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../platform/atomic-file.js';
import { ConfigError, type Config } from '../platform/config.js';
import { isUuid } from '../platform/ids.js';
import { KeyUnwrapError, SecretKek, type KeyEncryptionKey, type WrappedKey } from './kek.js';

interface KeyFile extends WrappedKey {
  version: 1;
  videoId: string;
  createdAt: string;
}

/**
 * What a derived key protects; each gets its own key, so no nonce space is shared between formats.
 * `chunk`: a fanned-out transcode's chunk files while they wait for the join (shared/transcode/fanout.ts).
 */
export type KeyPurpose = 'original' | 'meta' | 'rendition' | 'image' | 'chunk';

export function deriveKey(dataKey: Buffer, purpose: KeyPurpose): Buffer {
  return Buffer.from(hkdfSync('sha256', dataKey, Buffer.alloc(0), `pulsevault ${purpose} v1`, 32));
}

/** The 128-bit content key of a video's renditions (CENC is AES-128): what the key URL hands a player. */
export function renditionKey(dataKey: Buffer): Buffer {
  return deriveKey(dataKey, 'rendition').subarray(0, 16);
}

const CHECK_CONTEXT = 'pulsevault-kek-check';
const checkFile = (keyDir: string, kekId: string) => path.join(keyDir, `.kek-${kekId}.json`);

/**
 * Unwrapped data keys kept in memory for a short while, for a process that asks for the same
 * video's key per request (the stream function: one per range of an original). It spares a read of
 * the key file and an unwrap each time — with a KMS in the KEK's place (./kek.ts), a network round
 * trip. Safe against a disposal: every reader refuses a video with the deleted mark before it asks
 * for its key, and the mark comes before the shred (shared/lifecycle/dispose.ts). Rotation does not
 * change a data key. Bounded (least recently used out first); a key that leaves is zeroed.
 */
export class UnwrappedKeyCache {
  private readonly keys = new Map<string, { key: Buffer; until: number }>();

  constructor(
    private readonly ttlMs = 60_000,
    private readonly maxEntries = 1024,
  ) {}

  /** A copy of the cached key (the caller may keep or zero it), or null. */
  get(videoId: string): Buffer | null {
    const entry = this.keys.get(videoId);
    if (!entry) return null;
    this.keys.delete(videoId);
    if (entry.until <= Date.now()) {
      entry.key.fill(0);
      return null;
    }
    this.keys.set(videoId, entry);
    return Buffer.from(entry.key);
  }

  set(videoId: string, key: Buffer): void {
    this.keys.get(videoId)?.key.fill(0);
    this.keys.delete(videoId);
    for (const [oldest, entry] of this.keys) {
      if (this.keys.size < this.maxEntries) break;
      entry.key.fill(0);
      this.keys.delete(oldest);
    }
    this.keys.set(videoId, { key: Buffer.from(key), until: Date.now() + this.ttlMs });
  }
}

export class VideoKeys {
  constructor(
    readonly keyDir: string,
    readonly kek: KeyEncryptionKey,
    private readonly cache: UnwrappedKeyCache | null = null,
  ) {}

  file(videoId: string): string {
    if (!isUuid(videoId)) throw new Error('not a video id');
    return path.join(this.keyDir, `${videoId}.json`);
  }

  /** The video's data key, made and stored now if it has none (finalize: a retry after a crash reuses it). */
  async create(videoId: string): Promise<Buffer> {
    const existing = await this.dataKey(videoId);
    if (existing) return existing;
    const dataKey = randomBytes(32);
    await this.store(videoId, await this.kek.wrap(dataKey, videoId), new Date().toISOString());
    return dataKey;
  }

  /** The unwrapped data key, or null when the video has none (stored in the clear, or shredded). */
  async dataKey(videoId: string): Promise<Buffer | null> {
    const cached = this.cache?.get(videoId);
    if (cached) return cached;
    const file = await this.read(videoId);
    if (!file) return null;
    const dataKey = await this.kek.unwrap(file, videoId);
    this.cache?.set(videoId, dataKey);
    return dataKey;
  }

  /** Rewrap the video's key under the current KEK; media is not touched. */
  async rewrap(videoId: string): Promise<'rewrapped' | 'current' | 'missing'> {
    const file = await this.read(videoId);
    if (!file) return 'missing';
    if (file.kekId === this.kek.currentId) return 'current';
    const dataKey = await this.kek.unwrap(file, videoId);
    await this.store(videoId, await this.kek.wrap(dataKey, videoId), file.createdAt);
    return 'rewrapped';
  }

  /** The KEK id each video's key is wrapped under (rotation's progress, the start-up check). */
  async *entries(): AsyncGenerator<{ videoId: string; kekId: string }> {
    for (const name of await readdir(this.keyDir).catch(() => [] as string[])) {
      const videoId = name.slice(0, -'.json'.length);
      if (!name.endsWith('.json') || !isUuid(videoId)) continue;
      const file = await this.read(videoId);
      if (file) yield { videoId, kekId: file.kekId };
    }
  }

  /**
   * Start-up check: every KEK a check value exists for must be configured and must open it; the
   * current KEK gets its check value. Throws ConfigError (one line, no key) otherwise.
   */
  async verifyKeks(): Promise<void> {
    await mkdir(this.keyDir, { recursive: true, mode: 0o700 });
    const ids = (await readdir(this.keyDir)).flatMap((n) => /^\.kek-(.+)\.json$/.exec(n)?.[1] ?? []);
    for (const id of ids) {
      if (!this.kek.knows(id)) throw new ConfigError('MEDIA_KEK', `lacks KEK "${id}", which data keys in ${this.keyDir} are wrapped under (list it in MEDIA_KEK_PREVIOUS until \`pulsevault keys rotate\` has finished)`);
      const wrapped = JSON.parse(await readFile(checkFile(this.keyDir, id), 'utf8')) as WrappedKey;
      await this.kek.unwrap(wrapped, CHECK_CONTEXT).catch(() => {
        throw new ConfigError(id === this.kek.currentId ? 'MEDIA_KEK' : 'MEDIA_KEK_PREVIOUS', `holds a wrong key for KEK "${id}": it does not open the check value in ${this.keyDir}`);
      });
    }
    if (!ids.includes(this.kek.currentId)) {
      const wrapped = await this.kek.wrap(randomBytes(32), CHECK_CONTEXT);
      await writeFileAtomic(checkFile(this.keyDir, this.kek.currentId), `${JSON.stringify(wrapped)}\n`);
    }
  }

  /** After a complete rotation: forget KEKs no key is wrapped under any more (they may then be removed from MEDIA_KEK_PREVIOUS). */
  async retireUnusedKeks(): Promise<string[]> {
    const used = new Set<string>([this.kek.currentId]);
    for await (const e of this.entries()) used.add(e.kekId);
    const retired: string[] = [];
    for (const name of await readdir(this.keyDir)) {
      const id = /^\.kek-(.+)\.json$/.exec(name)?.[1];
      if (id === undefined || used.has(id)) continue;
      await rm(path.join(this.keyDir, name), { force: true });
      retired.push(id);
    }
    if (retired.length > 0) await fsyncDir(this.keyDir);
    return retired;
  }

  private async read(videoId: string): Promise<KeyFile | null> {
    try {
      const doc = JSON.parse(await readFile(this.file(videoId), 'utf8')) as KeyFile;
      if (doc.videoId !== videoId) throw new KeyUnwrapError(doc.kekId, 'does_not_open');
      return doc;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if (err instanceof SyntaxError) throw new KeyUnwrapError('?', 'does_not_open');
      throw err;
    }
  }

  private async store(videoId: string, wrapped: WrappedKey, createdAt: string): Promise<void> {
    await mkdir(this.keyDir, { recursive: true, mode: 0o700 });
    const doc: KeyFile = { version: 1, videoId, ...wrapped, createdAt };
    await writeFileAtomic(this.file(videoId), `${JSON.stringify(doc)}\n`, `.${videoId}.${process.pid}.${randomBytes(3).toString('hex')}.tmp`);
  }
}

/**
 * Crypto-shredding: remove the video's key file durably. Needs no KEK (a disposal run by any
 * process shreds). Idempotent.
 */
export async function destroyDataKey(keyDir: string, videoId: string): Promise<void> {
  if (!isUuid(videoId)) return;
  await rm(path.join(keyDir, `${videoId}.json`), { force: true });
  await fsyncDir(keyDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * The vault's keys from its configuration; null = media in the clear (development and tests without MEDIA_KEK).
 * `cache`: keep unwrapped keys for a while (UnwrappedKeyCache).
 */
export function videoKeysFromConfig(config: Pick<Config, 'keyDir' | 'mediaKek' | 'nodeEnv'>, cache: UnwrappedKeyCache | null = null): VideoKeys | null {
  if (!config.mediaKek) {
    if (config.nodeEnv === 'production') throw new ConfigError('MEDIA_KEK', 'is required in production (mount the secret media-kek)');
    return null;
  }
  return new VideoKeys(config.keyDir, new SecretKek(config.mediaKek.current, config.mediaKek.previous), cache);
}

/** For a process entry point: the keys, with the KEKs checked against the key store (a wrong KEK stops start-up). */
export async function openVideoKeys(config: Pick<Config, 'keyDir' | 'mediaKek' | 'nodeEnv'>, cache: UnwrappedKeyCache | null = null): Promise<VideoKeys | null> {
  const keys = videoKeysFromConfig(config, cache);
  await keys?.verifyKeks();
  return keys;
}
