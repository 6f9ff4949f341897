/**
 * A throwaway database on the machine's PostgreSQL (127.0.0.1:5432, trust auth;
 * `.ci/run` makes sure it is up), private to one test file, and sample meta.json
 * documents for the mirror tests.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import type { VideoMeta } from '../../shared/video/store.js';

const ADMIN_DSN = process.env.PV_TEST_POSTGRES_DSN ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  dsn: string;
  /** A client on the test database for assertions (closed by drop). */
  client: pg.Client;
  /** An outage: refuse new connections to the database and end those open (except `client`'s). */
  refuseConnections(): Promise<void>;
  /** The end of the outage. */
  acceptConnections(): Promise<void>;
  drop(): Promise<void>;
}

async function asAdmin<T>(work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: ADMIN_DSN });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `pv_test_${randomBytes(6).toString('hex')}`;
  await asAdmin((admin) => admin.query(`CREATE DATABASE ${name}`));
  const url = new URL(ADMIN_DSN);
  url.pathname = `/${name}`;
  const dsn = url.toString();
  const client = new pg.Client({ connectionString: dsn });
  await client.connect();
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const clientPid = rows[0]!.pid;
  return {
    dsn,
    client,
    async refuseConnections() {
      await asAdmin(async (admin) => {
        await admin.query(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS false`);
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2', [name, clientPid]);
      });
    },
    async acceptConnections() {
      await asAdmin((admin) => admin.query(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS true`));
    },
    async drop() {
      await client.end();
      await asAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** A valid meta.json document (before MediaStore stamps it), with PHI-looking user fields. */
export function videoMeta(overrides: Partial<VideoMeta> = {}): VideoMeta {
  const now = new Date().toISOString();
  return {
    videoId: randomUUID(),
    filename: 'patient-jane-doe-knee.mp4',
    owner: 'user-alice',
    status: 'uploaded',
    uploadedAt: now,
    updatedAt: now,
    original: 'original.mp4',
    size: 1_234_567,
    checksum: `sha256:${'ab'.repeat(32)}`,
    duration: 4.5,
    width: 1280,
    height: 720,
    fps: 30,
    videoCodec: 'h264',
    audioCodec: 'aac',
    bitrate: 2_000_000,
    renditions: [],
    metadata: { title: 'Jane Doe knee MRI follow-up', description: 'post-op week 2' },
    ...overrides,
  };
}

/** A logger whose JSON lines are kept in memory, to check what was (not) logged. */
export function memoryLogger(): { log: Logger; lines: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines: () => lines };
}
