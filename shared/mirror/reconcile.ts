/**
 * Reconcile the mirror with VIDEO_DIR (`pulsevault reindex`): the disk wins.
 *
 * Streams the directory in batches (videoIdBatches: fs.opendir), so memory stays flat
 * however many videos there are; the ids seen go to a temporary table instead
 * of a Set. Safe beside production: every statement is short and autocommitted,
 * meta.json is only read (atomic renames mean it is never seen half-written),
 * and rows the write path mirrors while the run goes on are neither overwritten
 * with older data nor removed (see the `repair` guard in rows.ts). Idempotent:
 * a second run over an unchanged disk reports no change.
 */
import type { Logger } from '../platform/log.js';
import { MetaCorruptError, videoIdBatches, type MediaStore, type VideoMeta } from '../video/store.js';
import { NotFoundError } from '../platform/errors.js';
import type { MetadataMirror } from './mirror.js';
import { toRow } from './rows.js';

export interface ReindexReport {
  /** Video directories found on disk. */
  scanned: number;
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
  /** meta.json present but unreadable or failing its checksum: row left as it was. */
  invalid: number;
}

export interface ReindexOptions {
  /** Videos per statement. */
  batchSize?: number;
  /** meta.json reads in flight at once (NFS latency, not CPU, is the limit). */
  readConcurrency?: number;
}

type Read = { id: string; meta: VideoMeta } | { id: string; missing: true } | { id: string; invalid: true };

async function readMeta(store: MediaStore, id: string, log: Logger): Promise<Read> {
  try {
    return { id, meta: await store.read(id) };
  } catch (err) {
    // A directory without meta.json is not a video (yet): its row, if any, goes.
    if (err instanceof NotFoundError) return { id, missing: true };
    log.warn({ videoId: id, code: err instanceof MetaCorruptError ? err.code : (err as NodeJS.ErrnoException).code ?? 'unknown' }, 'metadata mirror: meta.json unreadable; row kept as is');
    return { id, invalid: true };
  }
}

/** meta.json of each id, `concurrency` reads at a time (reindex and the catch-up). */
export async function readAll(store: MediaStore, ids: string[], concurrency: number, log: Logger): Promise<Read[]> {
  const out: Read[] = new Array(ids.length);
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const i = next++;
      out[i] = await readMeta(store, ids[i]!, log);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  return out;
}

export async function reindex(mirror: MetadataMirror, store: MediaStore, log: Logger, options: ReindexOptions = {}): Promise<ReindexReport> {
  const batchSize = options.batchSize ?? 250;
  const readConcurrency = options.readConcurrency ?? 8;
  const report: ReindexReport = { scanned: 0, added: 0, updated: 0, removed: 0, unchanged: 0, invalid: 0 };
  await mirror.ready();
  const client = await mirror.connectLongRunning('pulsevault-reindex');
  try {
    const { rows } = await client.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    const startedAt = rows[0]!.now;
    await client.query('CREATE TEMP TABLE reindex_seen (id uuid PRIMARY KEY)');

    const flush = async (ids: string[]) => {
      if (ids.length === 0) return;
      const reads = await readAll(store, ids, readConcurrency, log);
      const present = reads.filter((r) => !('missing' in r));
      const found = present.flatMap((r) => ('meta' in r ? [toRow(r.meta, mirror.withPhi)] : []));
      report.scanned += present.length;
      report.invalid += present.length - found.length;
      await client.query('INSERT INTO reindex_seen SELECT unnest($1::uuid[])', [present.map((r) => r.id)]);
      const { added, updated } = await mirror.upsert(found, { repairSince: startedAt }, client);
      report.added += added;
      report.updated += updated;
      report.unchanged += found.length - added - updated;
    };

    // A missing VIDEO_DIR (unmounted volume) throws here, before anything is removed.
    for await (const ids of videoIdBatches(store.videoDir, batchSize)) await flush(ids);

    const removed = await client.query(
      'DELETE FROM videos v WHERE v.mirrored_at < $1 AND NOT EXISTS (SELECT 1 FROM reindex_seen s WHERE s.id = v.id)',
      [startedAt],
    );
    report.removed = removed.rowCount ?? 0;
    return report;
  } finally {
    await client.end().catch(() => undefined);
  }
}
