/**
 * Webhook endpoints, one atomic file each on the media volume (`<MEDIA_ROOT>/webhooks/endpoints/
 * <id>.json`, mode 0640), never only in Redis: Redis may come back empty. A record holds the
 * endpoint's secrets: the current one, and during a rotation the previous one until
 * `expiresAt` (deliveries are signed with both meanwhile, ./signing.ts).
 *
 * With a KEK (MEDIA_KEK, required in production) each secret's 32 bytes are stored wrapped by it
 * (shared/keys/kek.ts), bound to the endpoint's id: the file alone, or a backup of the volume,
 * does not sign. A file written without a KEK (plaintext `secret`) is still read, and written
 * wrapped at its next change (a rotation). A wrapped secret with no KEK configured, or under a
 * KEK that is not configured, is an error naming the KEK, never the secret.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { readdirIfExists } from '../platform/exists.js';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { BadRequestError, NotFoundError } from '../platform/errors.js';
import { ConfigError, type Config } from '../platform/config.js';
import { isUuid } from '../platform/ids.js';
import { SecretKek, type KeyEncryptionKey, type WrappedKey } from '../keys/kek.js';
import { checkEndpointUrl, type AllowList } from './allow-list.js';
import { EVENT_TYPES, webhooksDir, type EventType } from './events.js';
import { newSecret, SECRET_PREFIX } from './signing.js';

const wrappedSchema = z.object({ kekId: z.string(), alg: z.literal('A256GCMKW'), wrapped: z.string() });
const fields = {
  id: z.string(),
  url: z.string(),
  events: z.array(z.enum(EVENT_TYPES)),
  createdAt: z.string(),
};
const recordSchema = z.object({ ...fields, secrets: z.array(z.object({ secret: z.string().startsWith(SECRET_PREFIX), expiresAt: z.string().nullable() })).min(1) });
export type EndpointRecord = z.infer<typeof recordSchema>;
/** The file: each secret in the clear (no KEK) or wrapped. */
const storedSchema = z.object({
  ...fields,
  secrets: z.array(z.union([z.object({ secret: z.string().startsWith(SECRET_PREFIX), expiresAt: z.string().nullable() }), z.object({ wrapped: wrappedSchema, expiresAt: z.string().nullable() })])).min(1),
});
type StoredRecord = z.infer<typeof storedSchema>;

/** What the KEK binds a wrapped secret to: this endpoint (a video's data key has its bare id). */
const wrapContext = (endpointId: string) => `webhook-endpoint:${endpointId}`;

/** What an admin may see of an endpoint after its creation: everything but the secrets. */
export type EndpointView = Omit<EndpointRecord, 'secrets'>;
export const endpointView = ({ secrets: _s, ...rest }: EndpointView & { secrets: unknown }): EndpointView => rest;

export const createSchema = z.strictObject({
  url: z.string().max(2048),
  events: z.array(z.enum(EVENT_TYPES)).min(1).max(EVENT_TYPES.length),
});

export class EndpointStore {
  readonly dir: string;

  /** `kek`: null stores secrets in the clear (development and tests without MEDIA_KEK). */
  constructor(webhooksDir: string, private readonly kek: KeyEncryptionKey | null = null) {
    this.dir = path.join(webhooksDir, 'endpoints');
  }

  private file(id: string): string {
    if (!isUuid(id)) throw new NotFoundError('no such webhook endpoint');
    return path.join(this.dir, `${id}.json`);
  }

  async create(body: unknown, list: AllowList, production: boolean): Promise<EndpointRecord> {
    const parsed = createSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new BadRequestError(`${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'is invalid'}`, 'invalid_field');
    }
    const url = checkEndpointUrl(list, parsed.data.url, production);
    const record: EndpointRecord = { id: randomUUID(), url: url.href, events: [...new Set(parsed.data.events)], createdAt: new Date().toISOString(), secrets: [{ secret: newSecret(), expiresAt: null }] };
    await this.save(record);
    return record;
  }

  /** A new current secret; the old one stays valid for `windowMs` (two signatures meanwhile). */
  async rotate(id: string, windowMs: number): Promise<EndpointRecord> {
    const record = await this.get(id);
    const expiresAt = new Date(Date.now() + windowMs).toISOString();
    const current = record.secrets.find((s) => s.expiresAt === null)!;
    const next: EndpointRecord = { ...record, secrets: [{ secret: newSecret(), expiresAt: null }, { secret: current.secret, expiresAt }] };
    await this.save(next);
    return next;
  }

  async get(id: string): Promise<EndpointRecord> {
    const stored = await this.stored(id);
    const secrets = await Promise.all(stored.secrets.map(async (s) => ('secret' in s ? s : { secret: await this.unwrap(s.wrapped, stored.id), expiresAt: s.expiresAt })));
    return { ...stored, secrets };
  }

  private async stored(id: string): Promise<StoredRecord> {
    try {
      return storedSchema.parse(JSON.parse(await readFile(this.file(id), 'utf8')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError('no such webhook endpoint');
      throw err;
    }
  }

  private async unwrap(wrapped: WrappedKey, endpointId: string): Promise<string> {
    if (!this.kek) throw new ConfigError('MEDIA_KEK', `webhook endpoint ${endpointId} has its secret wrapped under KEK "${wrapped.kekId}"; set MEDIA_KEK (the secret media-kek) to read it`);
    return `${SECRET_PREFIX}${(await this.kek.unwrap(wrapped, wrapContext(endpointId))).toString('base64')}`;
  }

  /** Every endpoint with its secrets (the sender). */
  list(): Promise<EndpointRecord[]> {
    return this.every((id) => this.get(id));
  }

  /** Every endpoint as an admin sees it: no secret is read, so no KEK is needed (GET /admin/webhooks, `pulsevault webhooks list`). */
  async views(): Promise<EndpointView[]> {
    return (await this.every((id) => this.stored(id))).map(endpointView);
  }

  private async every<T extends { createdAt: string }>(read: (id: string) => Promise<T>): Promise<T[]> {
    const names = await readdirIfExists(this.dir);
    const ids = names.filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
    // Only a file removed since the listing is skipped: one that does not read (a KEK missing) is an error, not an endpoint dropped.
    const records = await Promise.all(ids.map((id) => read(id).catch((err: unknown) => (err instanceof NotFoundError ? null : Promise.reject(err)))));
    return records.filter((r): r is Awaited<T> => r !== null).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async remove(id: string): Promise<void> {
    await this.stored(id);
    await rm(this.file(id), { force: true });
  }

  private async save(record: EndpointRecord): Promise<void> {
    const kek = this.kek;
    const stored: StoredRecord = kek
      ? { ...record, secrets: await Promise.all(record.secrets.map(async (s) => ({ wrapped: await kek.wrap(Buffer.from(s.secret.slice(SECRET_PREFIX.length), 'base64'), wrapContext(record.id)), expiresAt: s.expiresAt }))) }
      : record;
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.file(record.id), JSON.stringify(stored));
  }
}

/** The store as a process's configuration has it: secrets wrapped by MEDIA_KEK, which production requires. */
export function endpointStoreFromConfig(config: Pick<Config, 'videoDir' | 'mediaKek' | 'nodeEnv'>): EndpointStore {
  const dir = webhooksDir(config.videoDir);
  if (!config.mediaKek) {
    if (config.nodeEnv === 'production') throw new ConfigError('MEDIA_KEK', 'is required in production: webhook endpoint secrets are stored wrapped by it (mount the secret media-kek)');
    return new EndpointStore(dir);
  }
  return new EndpointStore(dir, new SecretKek(config.mediaKek.current, config.mediaKek.previous));
}

/** The secrets a delivery is signed with now: the current one and any previous one not yet expired. */
export function signingSecrets(record: EndpointRecord, now = Date.now()): string[] {
  return record.secrets.filter((s) => s.expiresAt === null || Date.parse(s.expiresAt) > now).map((s) => s.secret);
}

export const subscribes = (record: EndpointRecord, type: EventType) => record.events.includes(type);
