/** GET /media/videos through the stack: JWT first, then the mirror's keyset listing. */
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/platform/config.js';
import { MediaStore } from '../shared/video/store.js';
import { attachMirror, type AttachedMirror } from '../shared/mirror/attach.js';
import { createTestDatabase, memoryLogger, videoMeta, type TestDatabase } from './helpers/postgres.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';

const JWT_SECRET = 'listing-test-jwt-secret-0123456789abcdef01';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('2m').sign(new TextEncoder().encode(JWT_SECRET));

let db: TestDatabase;
let stack: TestStack;
let mirror: AttachedMirror | null;

beforeAll(async () => {
  db = await createTestDatabase();
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET, METADATA_DSN: db.dsn } });
  const config = loadConfig({ METADATA_DSN: db.dsn, VIDEO_DIR: path.join(stack.mediaRoot, 'videos') }, { require: [] });
  const store = new MediaStore(config.videoDir);
  mirror = attachMirror(store, stack.redis.client(), config, memoryLogger().log);
  await mirror!.mirror.ready();
  for (const owner of ['alice', 'alice', 'bob']) await store.write(videoMeta({ owner }));
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await mirror?.close();
  await stack?.stop();
  await db?.drop();
});

const list = async (query: string, bearer?: string) => {
  const res = await fetch(`${stack.url}/media/videos${query}`, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
  return { status: res.status, headers: res.headers, body: (await res.json()) as { videos?: { owner: string }[]; nextCursor?: string | null; error?: string } };
};

describe('GET /media/videos', () => {
  it('refuses a caller without a JWT with 401 and a challenge', async () => {
    const res = await list('');
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
  });

  it('lists every video for an admin, page by page', async () => {
    const token = await jwt('root', ['admin']);
    const first = await list('?limit=2', token);
    expect(first.status).toBe(200);
    expect(first.body.videos).toHaveLength(2);
    const second = await list(`?limit=2&cursor=${first.body.nextCursor}`, token);
    expect(second.body.videos).toHaveLength(1);
    expect(second.body.nextCursor).toBeNull();
  });

  it('lists only the caller’s own videos otherwise, and refuses another owner', async () => {
    const token = await jwt('alice', ['uploader']);
    const own = await list('', token);
    expect(own.body.videos!.map((v) => v.owner)).toEqual(['alice', 'alice']);
    expect((await list('?owner=bob', token)).status).toBe(403);
  });

  it('answers 400 naming a bad parameter', async () => {
    const res = await list('?limit=0', await jwt('root', ['admin']));
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body)).toContain('limit');
  });
});
