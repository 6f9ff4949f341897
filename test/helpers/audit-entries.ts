/** The entries of one audit category as the writer stored them (the files, not the stream it trims). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { AuditCategory, AuditEntry } from '../../shared/audit/entry.js';
import { listLogFiles, parseEntryLine } from '../../shared/audit/files.js';

export async function readAuditEntries(auditDir: string, category: AuditCategory): Promise<AuditEntry[]> {
  const files = (await listLogFiles(auditDir)).get(category) ?? [];
  const entries: AuditEntry[] = [];
  for (const file of files) {
    for (const line of (await readFile(path.join(auditDir, file.name), 'utf8')).split('\n')) {
      if (!line.trim()) continue;
      const parsed = parseEntryLine(line);
      if ('error' in parsed) throw new Error(`${file.name}: ${parsed.error}`);
      entries.push(parsed.entry);
    }
  }
  return entries;
}
