/**
 * The optional PostgreSQL mirror of meta.json (`METADATA_DSN`).
 *
 * The disk stays the source of truth: the mirror is written after each
 * meta.json write, and a mirror failure never fails the write. It is logged
 * (ids only), counted in `pulsevault_metadata_mirror_failures_total` and
 * re-mirrored later from the disk (catch-up.ts; attach.ts wires both to a
 * MediaStore). Writes are bounded: a short connect
 * and query timeout, no retry inline, and after a failure the mirror pauses for
 * a few seconds, so an unreachable database costs each write (almost) nothing
 * rather than a timeout each.
 */
import pg from 'pg';
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import type { VideoMeta } from '../video/store.js';
import { counter, histogram } from '../platform/metrics.js';
import { migrate } from './migrations/index.js';
import { toRow, upsertSql, type VideoRow } from './rows.js';

/** Connecting must be quick; a database that does not answer in this time is treated as down. */
const CONNECT_TIMEOUT_MS = 1_000;
/** One mirror statement (a single-row upsert, a listing page) must finish in this time. */
const QUERY_TIMEOUT_MS = 2_000;
/** The whole mirror step of one meta.json write, schema check included. */
const WRITE_DEADLINE_MS = 3_000;
/** After a failure, writes skip the database for this long instead of each waiting for it. */
const PAUSE_AFTER_FAILURE_MS = 5_000;

const failures = counter({
  name: 'pulsevault_metadata_mirror_failures_total',
  help: 'meta.json writes not mirrored to PostgreSQL when made (re-mirrored by the catch-up), by reason: error (attempted and failed) or paused (skipped after a recent failure).',
  labelNames: ['reason'] as const,
});

const writeSeconds = histogram({
  name: 'pulsevault_metadata_mirror_write_seconds',
  help: 'Time spent mirroring one meta.json write to PostgreSQL, failures included.',
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});

/** A log-safe code for a database error: SQLSTATE or errno, never the message (it may quote values). */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code)) return code;
  if (err instanceof Error && /timeout/i.test(err.message)) return 'timeout';
  return 'unknown';
}

/**
 * Whether `err` means the database could not be reached or is going away
 * (errno, timeout, SQLSTATE classes 08 connection, 53 resources, 57 operator
 * intervention), as opposed to a statement it rejected (a bug).
 */
export function isUnavailable(err: unknown): boolean {
  return !(err instanceof pg.DatabaseError) || /^(08|53|57)/.test(err.code ?? '');
}

export interface UpsertCounts {
  added: number;
  updated: number;
}

export class MetadataMirror {
  readonly pool: pg.Pool;
  private schema: Promise<void> | null = null;
  private pausedUntil = 0;

  constructor(
    private readonly dsn: string,
    readonly withPhi: boolean,
    private readonly log: Logger,
  ) {
    this.pool = new pg.Pool({
      connectionString: dsn,
      // Each function process mirrors its own writes one at a time; a listing page is one query.
      max: 2,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
      allowExitOnIdle: true,
      application_name: 'pulsevault',
    });
    // An idle connection dropped by the server is reported here; unhandled it would crash the process.
    this.pool.on('error', (err) => this.log.warn({ code: errorCode(err) }, 'metadata mirror connection lost'));
  }

  /**
   * Schema migrated (once per process; retried on the next call after a failure).
   * Migrations run on a connection of their own, free of the write path's query timeout.
   */
  ready(): Promise<void> {
    this.schema ??= (async () => {
      const client = await this.connectLongRunning('pulsevault-migrate');
      try {
        const applied = await migrate(client);
        if (applied.length > 0) this.log.info({ versions: applied }, 'metadata mirror schema migrated');
      } finally {
        await client.end().catch(() => undefined);
      }
    })().catch((err: unknown) => {
      this.schema = null;
      throw err;
    });
    return this.schema;
  }

  /** A connection of its own without the query timeout, for long work (migrations, reindex). Caller ends it. */
  async connectLongRunning(applicationName: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.dsn, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, application_name: applicationName });
    client.on('error', (err) => this.log.warn({ code: errorCode(err) }, 'metadata mirror connection lost'));
    await client.connect();
    return client;
  }

  /**
   * Upsert rows: `'newer'` on the write path, `{ repairSince }` for reconciliation
   * (see rows.ts). Returns how many were inserted and updated.
   */
  async upsert(rows: VideoRow[], guard: 'newer' | { repairSince: Date }, via: pg.Pool | pg.ClientBase = this.pool): Promise<UpsertCounts> {
    if (rows.length === 0) return { added: 0, updated: 0 };
    await this.ready();
    const [sql, values] = guard === 'newer' ? [upsertSql('newer'), [JSON.stringify(rows)]] : [upsertSql('repair'), [JSON.stringify(rows), guard.repairSince]];
    const { rows: changed } = await via.query<{ id: string; inserted: boolean }>(sql, values);
    const added = changed.filter((r) => r.inserted).length;
    return { added, updated: changed.length - added };
  }

  /** Delete the rows of videos gone from disk; returns how many there were. */
  async remove(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    await this.ready();
    const { rowCount } = await this.pool.query('DELETE FROM videos WHERE id = ANY($1::uuid[])', [ids]);
    return rowCount ?? 0;
  }

  /** Mirror one meta.json write; throws on failure (see `record` for the write path). */
  async mirror(meta: VideoMeta): Promise<void> {
    await this.upsert([toRow(meta, this.withPhi)], 'newer');
  }

  /**
   * The write-path listener: mirror `meta` within a deadline, never throw, count
   * and log what was not mirrored. Returns whether the row was written.
   */
  async record(meta: VideoMeta): Promise<boolean> {
    if (Date.now() < this.pausedUntil) {
      failures.inc({ reason: 'paused' });
      this.log.warn({ videoId: meta.videoId }, 'metadata mirror paused after a failure; write not mirrored');
      return false;
    }
    const stop = writeSeconds.startTimer();
    let timer: NodeJS.Timeout | undefined;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error('mirror write deadline'), { code: 'DEADLINE' })), WRITE_DEADLINE_MS);
      });
      await Promise.race([this.mirror(meta), deadline]);
      return true;
    } catch (err) {
      this.pausedUntil = Date.now() + PAUSE_AFTER_FAILURE_MS;
      failures.inc({ reason: 'error' });
      this.log.warn({ videoId: meta.videoId, code: errorCode(err) }, 'metadata mirror write failed');
      return false;
    } finally {
      clearTimeout(timer);
      stop();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The mirror configured by METADATA_DSN, or null when none is. */
export function openMirror(config: Config, log: Logger): MetadataMirror | null {
  return config.metadataDsn ? new MetadataMirror(config.metadataDsn, config.metadataMirrorPhi, log) : null;
}

