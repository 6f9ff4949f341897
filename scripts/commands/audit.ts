/**
 * `pulsevault audit verify [--from DATE] [--to DATE] [--category C]`: checks
 * every audit file's hash chain and signed checkpoint; prints one summary line
 * per file and each break with its file, line and kind. Exit 0 when all holds,
 * 1 on any break, 64 on bad usage, 66 when no audit file is in range (nothing
 * verified is not an intact chain). Needs AUDIT_SIGNING_KEY (and AUDIT_DIR or
 * MEDIA_ROOT) like the writer.
 */
import { access } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { AUDIT_CATEGORIES, type AuditCategory } from '../../shared/audit/entry.js';
import { verifyAuditLog } from '../../shared/audit/verify.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';

const USAGE = `usage: pulsevault audit verify [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--category ${AUDIT_CATEGORIES.join('|')}]`;
export const summary = `check the audit log's hash chains and signed checkpoints: audit verify [--from DATE] [--to DATE] [--category C]`;

const DATE = /^\d{4}-\d{2}-\d{2}$/;

export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { from: { type: 'string' }, to: { type: 'string' }, category: { type: 'string' } } });
  } catch (err) {
    process.stderr.write(`pulsevault audit: ${(err as Error).message} (${USAGE})\n`);
    return 64;
  }
  const { positionals, values } = parsed;
  const problems = [
    positionals.length === 0 ? 'say what to do: the subcommand is `verify`' : positionals[0] !== 'verify' || positionals.length !== 1 ? 'the only subcommand is `verify`' : null,
    values.from !== undefined && !DATE.test(values.from) ? '--from must be YYYY-MM-DD' : null,
    values.to !== undefined && !DATE.test(values.to) ? '--to must be YYYY-MM-DD' : null,
    values.category !== undefined && !(AUDIT_CATEGORIES as readonly string[]).includes(values.category) ? `--category must be one of ${AUDIT_CATEGORIES.join(', ')}` : null,
  ].filter((p): p is string => p !== null);
  if (problems.length > 0) {
    process.stderr.write(`pulsevault audit: ${problems.join('; ')} (${USAGE})\n`);
    return 64;
  }

  const config = loadConfigOrExit({ require: ['AUDIT_SIGNING_KEY'] });
  // A missing audit directory is a finding (or a wrong MEDIA_ROOT), never "0 files, chain intact".
  await access(config.auditDir);
  const report = await verifyAuditLog(config.auditDir, config.auditSigningKey!, {
    ...(values.from ? { from: values.from } : {}),
    ...(values.to ? { to: values.to } : {}),
    ...(values.category ? { category: values.category as AuditCategory } : {}),
  });
  if (report.files.length === 0) {
    const range = values.from || values.to ? ` from ${values.from ?? 'the start'} to ${values.to ?? 'today'}` : '';
    process.stderr.write(`pulsevault audit: no audit files${values.category ? ` of category ${values.category}` : ''}${range} in ${config.auditDir}: nothing verified; check --from/--to and AUDIT_DIR (or MEDIA_ROOT)\n`);
    return 66;
  }
  const out: string[] = [];
  for (const f of report.files) {
    const seqs = f.firstSeq === null ? 'no entries' : `seq ${f.firstSeq}..${f.lastSeq}`;
    out.push(`${f.ok ? 'ok  ' : 'FAIL'} ${f.file}  ${f.entries} entries, ${seqs}, checkpoint ${f.checkpoint}`);
  }
  for (const b of report.breaks) out.push(`BREAK ${b.file}${b.line === null ? '' : `:${b.line}`} ${b.kind}: ${b.detail}`);
  const verdict = report.breaks.length === 0 ? `verified ${report.files.length} file(s) in ${config.auditDir}: chain intact` : `${report.breaks.length} break(s) found in ${config.auditDir}`;
  out.push(verdict);
  process.stdout.write(`${out.join('\n')}\n`);
  return report.breaks.length === 0 ? 0 : 1;
}
