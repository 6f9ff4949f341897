/**
 * An audit report as CSV (one row per entry, then one per break; `record` says
 * which) and as a fixed-width table for the terminal. JSON is the report itself.
 */
import type { AuditReport } from './report.js';

const COLUMNS = ['record', 'time', 'category', 'action', 'outcome', 'reason', 'subject', 'role', 'video_id', 'resource', 'client_ip', 'request_id', 'seq', 'file', 'line', 'detail'] as const;

/** RFC 4180: quote a field holding a comma, quote or newline (entries hold ids only, but a break's detail is prose). */
const csvField = (v: string | number | null) => {
  const s = v === null ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function reportCsv(report: AuditReport): string {
  const rows: (string | number | null)[][] = [[...COLUMNS]];
  for (const l of report.lines) {
    rows.push(['entry', l.time, l.category, l.action, l.outcome, l.reason, l.subject, l.role, l.videoId, l.resource, l.clientIp, l.requestId, l.seq, l.file, l.line, null]);
  }
  for (const b of report.breaks) {
    const withheld = b.withheld > 0 ? ` (${b.withheld} matching line(s) not reported)` : '';
    rows.push(['break', null, b.category, null, null, null, null, null, null, null, null, null, null, b.file, b.line, `${b.kind}: ${b.detail}${withheld}`]);
  }
  return `${rows.map((r) => r.map(csvField).join(',')).join('\r\n')}\r\n`;
}

export function reportTable(report: AuditReport): string {
  const rows = [
    ['time', 'category', 'action', 'outcome', 'reason', 'subject', 'video', 'resource', 'client ip', 'request id'],
    ...report.lines.map((l) => [l.time, l.category, l.action, l.outcome, l.reason ?? '', l.subject ?? '', l.videoId ?? '', l.resource ?? '', l.clientIp ?? '', l.requestId ?? '']),
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const out = rows.map((r) => r.map((v, c) => v.padEnd(widths[c]!)).join('  ').trimEnd());
  for (const b of report.breaks) {
    out.push(`BREAK ${b.file}${b.line === null ? '' : `:${b.line}`} ${b.kind}: ${b.detail}${b.withheld > 0 ? ` (${b.withheld} matching line(s) not reported)` : ''}`);
  }
  const verdict = report.breaks.length === 0 ? 'chain verified' : `${report.breaks.length} break(s): lines after a break are not reported`;
  out.push(`${report.lines.length} entr${report.lines.length === 1 ? 'y' : 'ies'} from ${report.files} file(s), ${verdict}`);
  return `${out.join('\n')}\n`;
}
