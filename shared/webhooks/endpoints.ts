/**
 * Webhook endpoints, one atomic file each on the media volume (`<MEDIA_ROOT>/webhooks/endpoints/
 * <id>.json`, mode 0640), never only in Redis: Redis may come back empty. A record holds the
 * endpoint's secrets: the current one, and during a rotation the previous one until
 * `expiresAt` (deliveries are signed with both meanwhile, ./signing.ts).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { readdirIfExists } from '../platform/exists.js';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { BadRequestError, NotFoundError } from '../platform/errors.js';
import { isUuid } from '../platform/ids.js';
import { checkEndpointUrl, type AllowList } from './allow-list.js';
import { EVENT_TYPES, type EventType } from './events.js';
import { newSecret } from './signing.js';

const recordSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.enum(EVENT_TYPES)),
  createdAt: z.string(),
  secrets: z.array(z.object({ secret: z.string().startsWith('whsec_'), expiresAt: z.string().nullable() })).min(1),
});
export type EndpointRecord = z.infer<typeof recordSchema>;

/** What an admin may see of an endpoint after its creation: everything but the secrets. */
export type EndpointView = Omit<EndpointRecord, 'secrets'>;
export const endpointView = ({ secrets: _s, ...rest }: EndpointRecord): EndpointView => rest;

export const createSchema = z.strictObject({
  url: z.string().max(2048),
  events: z.array(z.enum(EVENT_TYPES)).min(1).max(EVENT_TYPES.length),
});

export class EndpointStore {
  readonly dir: string;

  constructor(webhooksDir: string) {
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
    try {
      return recordSchema.parse(JSON.parse(await readFile(this.file(id), 'utf8')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError('no such webhook endpoint');
      throw err;
    }
  }

  async list(): Promise<EndpointRecord[]> {
    const names = await readdirIfExists(this.dir);
    const ids = names.filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
    const records = await Promise.all(ids.map((id) => this.get(id).catch(() => null)));
    return records.filter((r): r is EndpointRecord => r !== null).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async remove(id: string): Promise<void> {
    await this.get(id);
    await rm(this.file(id), { force: true });
  }

  private async save(record: EndpointRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.file(record.id), JSON.stringify(record));
  }
}

/** The secrets a delivery is signed with now: the current one and any previous one not yet expired. */
export function signingSecrets(record: EndpointRecord, now = Date.now()): string[] {
  return record.secrets.filter((s) => s.expiresAt === null || Date.parse(s.expiresAt) > now).map((s) => s.secret);
}

export const subscribes = (record: EndpointRecord, type: EventType) => record.events.includes(type);
