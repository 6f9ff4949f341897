/**
 * `pulsevault audit verify|report|reindex|export`: the audit log's operator tools.
 *
 * - verify [--from DATE] [--to DATE] [--category C]: every file's hash chain, entry MACs and
 *   signed checkpoint, and, when Redis answers, each category's head against its anchor there
 *   (shared/audit/anchor.ts); one summary line per file, each break with its file, line and
 *   kind, and a note for what could not be checked.
 * - report --video ID | --subject RAW [--from] [--to] [--category] [--format table|json|csv]:
 *   the accounting of disclosures from verified chain segments (shared/audit/report.ts);
 *   the raw subject is turned into its pseudonyms here (HMAC_SECRET, and
 *   HMAC_SECRET_PREVIOUS after a rotation) and never stored.
 * - reindex [--from] [--to] [--category]: rebuild the report index of every file from the logs.
 * - export [--since CURSOR] [--limit N]: ECS JSON lines for a SIEM (shared/audit/export.ts);
 *   the cursor to resume from goes to stderr as `cursor <c>`.
 *
 * Exit 0 when all holds, 1 on any break, 64 on bad usage, 66 when verify finds no audit file
 * in range (nothing verified is not an intact chain), 73 when reindex cannot write the index
 * (a read-only audit volume). Needs AUDIT_SIGNING_KEY (and
 * AUDIT_DIR or MEDIA_ROOT) like the writer.
 */
import { access, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readAnchors, type Anchor } from '../../shared/audit/anchor.js';
import { AUDIT_CATEGORIES, type AuditCategory } from '../../shared/audit/entry.js';
import { ExportBreakError, exportEntries, parseCursor, START_CURSOR, toEcs } from '../../shared/audit/export.js';
import { listLogFiles } from '../../shared/audit/files.js';
import { auditReport, isUnwritable, reindexFile, type ReportQuery } from '../../shared/audit/report.js';
import { reportCsv, reportTable } from '../../shared/audit/report-format.js';
import { INDEX_DIR, indexPath } from '../../shared/audit/report-index.js';
import { subjectPseudonyms } from '../../shared/audit/subject.js';
import { verifyAuditLog } from '../../shared/audit/verify.js';
import { loadConfigOrExit, type Config } from '../../shared/platform/config.js';
import { createRedis, namesRedis, redisAnswers } from '../../shared/platform/redis.js';
import { isVideoId } from '../../shared/video/store.js';

export const summary = `the audit log: audit verify|reindex [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--category ${AUDIT_CATEGORIES.join('|')}]; audit report --video ID|--subject SUB [--from] [--to] [--category] [--format table|json|csv]; audit export [--since CURSOR] [--limit N]`;

/** sysexits.h: an output file cannot be created. */
const EX_CANTCREAT = 73;

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const SUBCOMMANDS = ['verify', 'report', 'reindex', 'export'] as const;
const FORMATS = ['table', 'json', 'csv'];

function usage(problems: string[]): number {
  // One line naming the fix, as every CLI error (docs/operations.md).
  process.stderr.write(`pulsevault audit: ${problems.join('; ')} (usage: pulsevault ${summary.slice(summary.indexOf('audit verify'))})\n`);
  return 64;
}

export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        category: { type: 'string' },
        video: { type: 'string' },
        subject: { type: 'string' },
        format: { type: 'string' },
        since: { type: 'string' },
        limit: { type: 'string' },
      },
    });
  } catch (err) {
    return usage([(err as Error).message]);
  }
  const { positionals, values } = parsed;
  const sub = positionals[0] as (typeof SUBCOMMANDS)[number];
  const problems = [
    positionals.length === 0 ? `say what to do: the subcommand is one of ${SUBCOMMANDS.join(', ')}` : !SUBCOMMANDS.includes(sub) || positionals.length !== 1 ? `the subcommand is one of ${SUBCOMMANDS.join(', ')}` : null,
    values.from !== undefined && !DATE.test(values.from) ? '--from must be YYYY-MM-DD' : null,
    values.to !== undefined && !DATE.test(values.to) ? '--to must be YYYY-MM-DD' : null,
    values.category !== undefined && !(AUDIT_CATEGORIES as readonly string[]).includes(values.category) ? `--category must be one of ${AUDIT_CATEGORIES.join(', ')}` : null,
    sub === 'report' && values.video === undefined && values.subject === undefined ? 'report needs --video or --subject' : null,
    values.video !== undefined && !isVideoId(values.video) ? '--video must be a video id (a UUID)' : null,
    values.subject === '' ? '--subject must not be empty' : null,
    values.format !== undefined && !FORMATS.includes(values.format) ? `--format must be one of ${FORMATS.join(', ')}` : null,
    values.since !== undefined && parseCursor(values.since) === null ? '--since must be a cursor printed by a previous export (access:N,upload:N,transcode:N,admin:N)' : null,
    values.limit !== undefined && !/^[1-9]\d{0,8}$/.test(values.limit) ? '--limit must be a positive integer' : null,
  ].filter((p): p is string => p !== null);
  if (problems.length > 0) return usage(problems);

  const config = loadConfigOrExit({ require: ['AUDIT_SIGNING_KEY', ...(values.subject !== undefined ? (['HMAC_SECRET'] as const) : [])] });
  // A missing audit directory is a finding (or a wrong MEDIA_ROOT), never "0 files, chain intact".
  await access(config.auditDir);
  const range = {
    ...(values.from ? { from: values.from } : {}),
    ...(values.to ? { to: values.to } : {}),
    ...(values.category ? { category: values.category as AuditCategory } : {}),
  };
  if (sub === 'verify') return verify(config, range);
  if (sub === 'reindex') return reindex(config, range);
  if (sub === 'export') return exportSince(config, values.since ?? null, values.limit ? Number(values.limit) : Infinity);
  const query: ReportQuery = {
    ...range,
    ...(values.video ? { videoId: values.video } : {}),
    ...(values.subject !== undefined ? { subjects: subjectPseudonyms(config, values.subject) } : {}),
  };
  const report = await auditReport(config.auditDir, config.auditSigningKey!, query, { buildIndex: true });
  const format = values.format ?? 'table';
  await writeOut(format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : format === 'csv' ? reportCsv(report) : reportTable(report));
  return report.breaks.length === 0 ? 0 : 1;
}

/** Write to stdout and wait until it is handed to the OS: the CLI exits right after, and a pipe is written asynchronously. */
function writeOut(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

async function verify(config: Config, range: { from?: string; to?: string; category?: AuditCategory }): Promise<number> {
  const anchors = await anchorsInRedis(config);
  const report = await verifyAuditLog(config.auditDir, config.auditSigningKey!, { ...range, ...(anchors && { anchors }) });
  if (!anchors) report.notes.push('no Redis configured, or it does not answer: no anchor checked; a rollback of the whole volume shows only against an off-volume copy of checkpoints/');
  if (report.files.length === 0) {
    const span = range.from || range.to ? ` from ${range.from ?? 'the start'} to ${range.to ?? 'today'}` : '';
    process.stderr.write(`pulsevault audit: no audit files${range.category ? ` of category ${range.category}` : ''}${span} in ${config.auditDir}: nothing verified; check --from/--to and AUDIT_DIR (or MEDIA_ROOT)\n`);
    return 66;
  }
  const out: string[] = [];
  for (const f of report.files) {
    const seqs = f.firstSeq === null ? 'no entries' : `seq ${f.firstSeq}..${f.lastSeq}`;
    out.push(`${f.ok ? 'ok  ' : 'FAIL'} ${f.file}  ${f.entries} entries, ${seqs}, checkpoint ${f.checkpoint}`);
  }
  for (const b of report.breaks) out.push(`BREAK ${b.file}${b.line === null ? '' : `:${b.line}`} ${b.kind}: ${b.detail}`);
  for (const note of report.notes) out.push(`note: ${note}`);
  const verdict = report.breaks.length === 0 ? `verified ${report.files.length} file(s) in ${config.auditDir}: chain intact` : `${report.breaks.length} break(s) found in ${config.auditDir}`;
  out.push(verdict);
  process.stdout.write(`${out.join('\n')}\n`);
  return report.breaks.length === 0 ? 0 : 1;
}

/** The anchors the configured Redis holds, or null when none is configured or it does not answer (verify goes on without them). */
async function anchorsInRedis(config: Config): Promise<Map<AuditCategory, Anchor> | null> {
  // One quick try first: a Redis that is down would hold verify up for the command deadline and its retries.
  if (!namesRedis(config) || !(await redisAnswers(config.redis))) return null;
  const redis = createRedis(config, { name: 'audit-verify' });
  try {
    return await readAnchors(redis);
  } catch {
    return null;
  } finally {
    redis.disconnect();
  }
}

/** Every index of the range thrown away and built again from a verification of its file. */
async function reindex(config: Config, range: { from?: string; to?: string; category?: AuditCategory }): Promise<number> {
  const files = [...(await listLogFiles(config.auditDir)).values()]
    .flat()
    .filter((f) => (!range.from || f.day >= range.from) && (!range.to || f.day <= range.to) && (!range.category || f.category === range.category));
  let breaks = 0;
  try {
    for (const f of files) await rm(indexPath(config.auditDir, f.name), { force: true });
    for (const f of files) {
      const found = await reindexFile(config.auditDir, config.auditSigningKey!, f);
      for (const b of found) process.stdout.write(`BREAK ${b.file}${b.line === null ? '' : `:${b.line}`} ${b.kind}: ${b.detail} (not indexed)\n`);
      breaks += found.length;
    }
  } catch (err) {
    if (!isUnwritable(err)) throw err;
    // Reports stay right without an index (only slower); saying "indexed" here would be a lie.
    process.stderr.write(
      `pulsevault audit: cannot write the report index in ${path.join(config.auditDir, INDEX_DIR)} (${(err as NodeJS.ErrnoException).code}); ` +
        'reindex needs AUDIT_DIR writable: run it where the audit volume is mounted read-write (k8s/audit-reindex-cronjob.yaml)\n',
    );
    return EX_CANTCREAT;
  }
  process.stdout.write(`indexed ${files.length} file(s) in ${config.auditDir}${breaks > 0 ? `, ${breaks} break(s)` : ''}\n`);
  return breaks === 0 ? 0 : 1;
}

async function exportSince(config: Config, since: string | null, limit: number): Promise<number> {
  let cursor = since ?? null;
  let exported = 0;
  let status = 0;
  try {
    for await (const { entry, cursor: after } of exportEntries(config.auditDir, since ? parseCursor(since)! : START_CURSOR)) {
      if (exported === limit) break;
      const line = `${JSON.stringify(toEcs(entry, after))}\n`;
      if (process.stdout.writableNeedDrain) await writeOut(line);
      else process.stdout.write(line);
      cursor = after;
      exported += 1;
    }
  } catch (err) {
    if (!(err instanceof ExportBreakError)) throw err;
    process.stderr.write(`export stopped: ${err.message}\n`);
    status = 1;
  }
  await writeOut('');
  process.stderr.write(`exported ${exported} entr${exported === 1 ? 'y' : 'ies'}\ncursor ${cursor ?? 'access:0,upload:0,transcode:0,admin:0'}\n`);
  return status;
}
