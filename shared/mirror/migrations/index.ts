/**
 * Versioned schema migrations of the metadata mirror, applied at start-up.
 *
 * Each migration is a module `NNNN-name.ts` exporting `version`, `name` and
 * `sql` (SQL kept in TypeScript so tsc ships it in dist/ and in the function
 * images). Every process runs `migrate()` when it opens the mirror; a
 * transaction-scoped advisory lock lets exactly one of many replicas starting at
 * once apply what is missing while the others wait, then find nothing to do.
 * PostgreSQL DDL is transactional: a failed migration leaves no half schema.
 */
import { createHash } from 'node:crypto';
import type { ClientBase } from 'pg';
import * as videos from './0001-videos.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** In version order; append only — never edit one that has shipped. */
export const MIGRATIONS: readonly Migration[] = [videos];

/** Arbitrary constant naming the lock, shared by every PulseVault process. */
const LOCK_KEY = 0x70760001;

const digest = (m: Migration) => createHash('sha256').update(m.sql).digest('hex');

export class MigrationError extends Error {
  override name = 'MigrationError';
}

/**
 * Apply the pending migrations on `client` (a connection of its own, without the
 * tight query timeout of the write path: a migration may take a while).
 * Returns the versions this call applied.
 */
export async function migrate(client: ClientBase, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      sha256     text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number; sha256: string }>('SELECT version, sha256 FROM schema_migrations');
    const applied = new Map(rows.map((r) => [r.version, r.sha256]));
    const done: number[] = [];
    for (const m of migrations) {
      const known = applied.get(m.version);
      if (known !== undefined) {
        // An edited migration would leave databases migrated before and after the edit different.
        if (known !== digest(m)) throw new MigrationError(`migration ${m.version} (${m.name}) changed after it was applied`);
        continue;
      }
      await client.query(m.sql);
      await client.query('INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)', [m.version, m.name, digest(m)]);
      done.push(m.version);
    }
    await client.query('COMMIT');
    return done;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
