/**
 * meta.json → `videos` row, and the one upsert statement both the write-path
 * mirror and the reconciliation use.
 *
 * Rows travel as one JSON parameter expanded by `json_populate_recordset`, so a
 * batch of any size is one statement with one bound value. The upsert changes a
 * row only when a column differs (`IS DISTINCT FROM`), which makes it idempotent
 * and lets `RETURNING` tell inserted, updated and unchanged apart.
 */
import type { VideoMeta } from '../video/store.js';

export interface VideoRow {
  id: string;
  owner: string | null;
  status: string;
  progress: number | null;
  uploaded_at: string;
  updated_at: string;
  duration: number | null;
  width: number | null;
  height: number | null;
  renditions: string[];
  checksum: string;
  size: number;
  meta_checksum: string;
  title: string | null;
  description: string | null;
}

const COLUMNS = [
  'id',
  'owner',
  'status',
  'progress',
  'uploaded_at',
  'updated_at',
  'duration',
  'width',
  'height',
  'renditions',
  'checksum',
  'size',
  'meta_checksum',
  'title',
  'description',
] as const satisfies readonly (keyof VideoRow)[];

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const int = (v: unknown): number | null => (num(v) === null ? null : Math.round(v as number));
const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/**
 * The row mirroring `meta`. Title and description (PHI) are copied only when
 * the operator opted in with METADATA_MIRROR_PHI; the filename never is.
 * Types are coerced so an older or hand-edited meta.json cannot make the batch fail.
 */
export function toRow(meta: VideoMeta, withPhi: boolean): VideoRow {
  const user = (typeof meta.metadata === 'object' && meta.metadata !== null ? meta.metadata : {}) as Record<string, unknown>;
  return {
    id: meta.videoId,
    owner: text(meta.owner),
    status: String(meta.status),
    progress: int(meta.progress),
    uploaded_at: meta.uploadedAt,
    updated_at: meta.updatedAt,
    duration: num(meta.duration),
    width: int(meta.width),
    height: int(meta.height),
    renditions: Array.isArray(meta.renditions) ? meta.renditions.filter((r): r is string => typeof r === 'string') : [],
    checksum: String(meta.checksum),
    size: int(meta.size) ?? 0,
    meta_checksum: String(meta.metaChecksum),
    title: withPhi ? text(user.title) : null,
    description: withPhi ? text(user.description) : null,
  };
}

const list = (prefix: string) => COLUMNS.map((c) => `${prefix}${c}`).join(', ');

/**
 * When an existing row may be replaced:
 * - `newer`: the write path; a meta.json write that reaches the database late
 *   (two replicas, one slow) never overwrites a newer one.
 * - `repair`: reconciliation; also overwrites rows last mirrored before the run
 *   started (`$2`), since the disk read now is the truth even if the row claims
 *   to be newer, while rows the write path mirrored during the run are left alone.
 */
export type UpsertGuard = 'newer' | 'repair';

export function upsertSql(guard: UpsertGuard): string {
  const replace =
    guard === 'newer' ? 'videos.updated_at <= EXCLUDED.updated_at' : '(videos.updated_at <= EXCLUDED.updated_at OR videos.mirrored_at < $2)';
  return `INSERT INTO videos (${list('')}, mirrored_at)
SELECT ${list('')}, clock_timestamp() FROM json_populate_recordset(NULL::videos, $1::json)
ON CONFLICT (id) DO UPDATE SET ${COLUMNS.map((c) => `${c} = EXCLUDED.${c}`).join(', ')}, mirrored_at = EXCLUDED.mirrored_at
WHERE ${replace} AND (${list('videos.')}) IS DISTINCT FROM (${list('EXCLUDED.')})
RETURNING id, (xmax = 0) AS inserted`;
}
