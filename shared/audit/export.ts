/**
 * `pulsevault audit export`: the audit entries as JSON lines in Elastic Common Schema
 * (ECS 8.11) for a SIEM, resumable by a cursor. The cursor is the last exported seq of
 * every category (`access:120,upload:7,transcode:0,admin:3`): each chain is exported in
 * its order, and an exported line carries the cursor that resumes after it. A line is
 * exported only when its hash matches its content and its seq follows the previous one;
 * anything else stops the export (run `pulsevault audit verify`). Entries hold ids only
 * (pseudonyms, UUIDs, anonymised IPs), and so does every exported line.
 */
import path from 'node:path';
import { AUDIT_CATEGORIES, type AuditCategory, type AuditEntry } from './entry.js';
import { forEachLine, listLogFiles, parseEntryLine, readFileEnds } from './files.js';

export type ExportCursor = Record<AuditCategory, number>;

const CURSOR = new RegExp(`^${AUDIT_CATEGORIES.map((c) => `${c}:(\\d{1,15})`).join(',')}$`);

export const START_CURSOR: ExportCursor = { access: 0, upload: 0, transcode: 0, admin: 0 };

export function formatCursor(c: ExportCursor): string {
  return AUDIT_CATEGORIES.map((k) => `${k}:${c[k]}`).join(',');
}

/** The cursor, or null when it is not one. */
export function parseCursor(text: string): ExportCursor | null {
  const m = CURSOR.exec(text);
  return m ? (Object.fromEntries(AUDIT_CATEGORIES.map((k, i) => [k, Number(m[i + 1])])) as ExportCursor) : null;
}

export class ExportBreakError extends Error {
  constructor(file: string, line: number, detail: string) {
    super(`${file}:${line}: ${detail}; run \`pulsevault audit verify\``);
    this.name = 'ExportBreakError';
  }
}

const ECS_OUTCOME = { granted: 'success', success: 'success', denied: 'failure', failure: 'failure' } as const;
const ECS_CATEGORY: Record<AuditCategory, string[]> = { access: ['file'], upload: ['file'], transcode: ['process'], admin: ['configuration'] };

/** One entry in ECS; PulseVault's own fields under `pulsevault.*`. */
export function toEcs(e: AuditEntry, cursor: string): Record<string, unknown> {
  return {
    '@timestamp': e.ts,
    ecs: { version: '8.11.0' },
    event: {
      kind: 'event',
      category: ECS_CATEGORY[e.category],
      type: [e.outcome === 'denied' ? 'denied' : e.outcome === 'granted' ? 'allowed' : 'info'],
      action: e.action,
      outcome: ECS_OUTCOME[e.outcome],
      reason: e.reason ?? undefined,
      dataset: 'pulsevault.audit',
      module: 'pulsevault',
      created: e.occurredAt,
      sequence: e.seq,
      id: `${e.category}-${e.seq}`,
    },
    user: e.actor ? { id: e.actor.userId ?? undefined, roles: e.actor.role ? [e.actor.role] : undefined } : undefined,
    source: e.clientIp ? { ip: e.clientIp } : undefined,
    http: e.requestId ? { request: { id: e.requestId } } : undefined,
    // The media URL path the entry disclosed (served, refused, or opened by a signed token).
    url: e.resource && e.videoId ? { path: `/media/videos/${e.videoId}/${e.resource}` } : undefined,
    pulsevault: { category: e.category, outcome: e.outcome, video_id: e.videoId ?? undefined, resource: e.resource, seq: e.seq, hash: e.hash, prev_hash: e.prevHash, cursor },
  };
}

/** The entries after `since`, category by category, each with the cursor that resumes after it. */
export async function* exportEntries(auditDir: string, since: ExportCursor): AsyncGenerator<{ entry: AuditEntry; cursor: string }> {
  const at = { ...since };
  const files = await listLogFiles(auditDir);
  for (const category of AUDIT_CATEGORIES) {
    for (const file of files.get(category) ?? []) {
      const full = path.join(auditDir, file.name);
      const ends = await readFileEnds(full);
      if (!ends.last || ends.last.seq <= at[category]) continue; // exported already: not read again
      const batch: { entry: AuditEntry; cursor: string }[] = [];
      let problem: ExportBreakError | null = null;
      // A day's file is read in one pass; its entries are handed out after it (bounded by a day's volume).
      await forEachLine(full, (text, line) => {
        if (problem) return;
        const parsed = parseEntryLine(text);
        if ('error' in parsed) return void (problem = new ExportBreakError(file.name, line, parsed.error));
        const e = parsed.entry;
        if (e.seq <= at[category]) return;
        if (at[category] > 0 && e.seq !== at[category] + 1) return void (problem = new ExportBreakError(file.name, line, `seq ${e.seq} does not follow seq ${at[category]}`));
        at[category] = e.seq;
        batch.push({ entry: e, cursor: formatCursor(at) });
      });
      yield* batch;
      if (problem) throw problem;
    }
  }
}
