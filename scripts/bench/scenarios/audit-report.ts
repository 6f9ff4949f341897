/**
 * 9. The accounting of disclosures at six-year-sized volume: 30 days of 200,000
 * access entries a day (6 M entries, written with the chain's own code into the
 * scratch directory: scripts/bench/audit-volume.ts), reported for one video and for
 * one subject by `pulsevault audit report` (index built beforehand by a first report,
 * every reported line still re-hashed against it) against `grep -F <id>` over the same
 * files, both under hyperfine in the same run. Generation and the index-less
 * (verify everything) report are timed once and noted.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { subjectPseudonym } from '../../../shared/audit/subject.js';
import { writeAuditVolume } from '../audit-volume.js';
import type { BenchContext } from '../context.js';
import type { Row } from '../table.js';
import { hyperfine, ROOT, timeOnce } from '../tools.js';

const DAYS = 30;
const PER_DAY = 200_000;
const VIDEO_COUNT = 2_000;
const SUBJECT_COUNT = 5_000;
/** Scratch secrets of the synthetic log (no deployment uses them). */
const SIGNING_KEY = 'bench-audit-report-signing-key-0123456789';
const HMAC_SECRET = 'bench-audit-report-hmac-secret-0123456789';

const uuid = (i: number) => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;

export async function benchAuditReport(ctx: BenchContext): Promise<Row[]> {
  const auditDir = path.join(ctx.scratch, 'audit-report');
  mkdirSync(auditDir, { recursive: true });
  const videos = Array.from({ length: VIDEO_COUNT }, (_, i) => uuid(i + 1));
  const rawSubjects = Array.from({ length: SUBJECT_COUNT }, (_, i) => `viewer-${i}@example.org`);
  ctx.progress(`9. writing ${DAYS} days × ${PER_DAY} audit entries`);
  const started = performance.now();
  await writeAuditVolume(auditDir, SIGNING_KEY, {
    firstDay: '2026-01-01',
    days: DAYS,
    perDay: PER_DAY,
    videos,
    subjects: rawSubjects.map((s) => subjectPseudonym(HMAC_SECRET, s)),
  });
  const generationSeconds = (performance.now() - started) / 1000;

  const env = `AUDIT_DIR=${auditDir} MEDIA_ROOT=${auditDir} AUDIT_SIGNING_KEY=${SIGNING_KEY} HMAC_SECRET=${HMAC_SECRET} LOG_LEVEL=error`;
  const cli = `${env} node ${path.join(ROOT, 'dist/scripts/pulsevault.js')} audit`;
  const video = videos[17]!;
  const subject = rawSubjects[42]!;
  const cliArgs = (...args: string[]) => [path.join(ROOT, 'dist/scripts/pulsevault.js'), 'audit', ...args];
  const withEnv = { AUDIT_DIR: auditDir, MEDIA_ROOT: auditDir, AUDIT_SIGNING_KEY: SIGNING_KEY, HMAC_SECRET, LOG_LEVEL: 'error' };
  ctx.progress('9. report without an index (verifies every file, writes the indexes)');
  // Given to the child only: set on this process, AUDIT_DIR reached the verification of the stack's chain after the run.
  const coldSeconds = await timeOnce(process.execPath, cliArgs('report', '--video', video, '--format', 'json'), { env: withEnv });

  const files = path.join(auditDir, 'access-*.log');
  const runs = Math.max(5, ctx.sizes.hyperfineRuns);
  ctx.progress('9. report by video vs grep -F');
  // Both write their answer to a file: GNU grep stops at the first match when its output is /dev/null.
  const out = path.join(ctx.scratch, 'audit-report.out');
  const byVideo = await hyperfine(`${cli} report --video ${video} --format json > ${out}`, runs, ctx.scratch);
  const grepVideo = await hyperfine(`grep -F ${video} ${files} > ${out}`, runs, ctx.scratch);
  ctx.progress('9. report by subject vs grep -F');
  const bySubject = await hyperfine(`${cli} report --subject ${subject} --format json > ${out}`, runs, ctx.scratch);
  const grepSubject = await hyperfine(`grep -F ${subjectPseudonym(HMAC_SECRET, subject)} ${files} > ${out}`, runs, ctx.scratch);

  const note = `${DAYS * PER_DAY} entries in ${DAYS} files (${VIDEO_COUNT} videos, ${SUBJECT_COUNT} subjects: ${(DAYS * PER_DAY) / VIDEO_COUNT} lines per video, ${(DAYS * PER_DAY) / SUBJECT_COUNT} per subject); written in ${generationSeconds.toFixed(0)} s; first report without an index (verifies every file, writes the indexes) ${coldSeconds.toFixed(1)} s; mean of ${runs} hyperfine runs after a warm-up (page cache warm for both)`;
  return [
    {
      scenario: '9a. Audit report, one video over 30 days × 200,000 entries (indexed, each line re-hashed)',
      pulsevault: { value: byVideo.meanSeconds, unit: 's' },
      reference: { value: grepVideo.meanSeconds, unit: 's' },
      referenceName: 'grep -F <videoId> over the same files',
      better: 'lower',
      commands: [byVideo.command, grepVideo.command],
      note,
    },
    {
      scenario: '9b. Audit report, one subject over the same 30 days',
      pulsevault: { value: bySubject.meanSeconds, unit: 's' },
      reference: { value: grepSubject.meanSeconds, unit: 's' },
      referenceName: 'grep -F <pseudonym> over the same files',
      better: 'lower',
      commands: [bySubject.command, grepSubject.command],
      note,
    },
  ];
}
