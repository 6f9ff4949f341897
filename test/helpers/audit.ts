/** Reading the audit log the way an auditor would: the hash-chained files on disk. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { AUDIT_LEASE_KEY } from '../../shared/audit/stream.js';
import { baseTestEnv, spawnNode } from './node-process.js';
import { waitFor } from './wait.js';

export type AuditLine = Record<string, unknown> & { category: string; action: string; outcome: string; videoId: string | null };

/** Every entry of every `<category>-YYYY-MM-DD.log` file in `auditDir`, in file order. */
export function readAuditEntries(auditDir: string): AuditLine[] {
  if (!existsSync(auditDir)) return [];
  return readdirSync(auditDir)
    .filter((f) => /^[a-z]+-\d{4}-\d{2}-\d{2}\.log$/.test(f))
    .sort()
    .flatMap((f) => readFileSync(path.join(auditDir, f), 'utf8').split('\n').filter(Boolean))
    .map((line) => JSON.parse(line) as AuditLine);
}

/**
 * A real audit writer (the sequencer) for tests that run functions without the
 * whole stack. Resolves once it holds its lease: record() calls made before
 * that would wait for it and, on a slow machine, hit their ack timeout.
 */
/**
 * The entries of `auditDir` that `match`, once at least `expected` are there: an entry recorded
 * through the Redis stream (not confirmed by the writer directly) reaches the files a little after
 * record() resolves, so a count read at once can be short on a busy machine.
 */
export async function auditEntriesOnceThere(auditDir: string, match: (e: AuditLine) => boolean, expected: number): Promise<AuditLine[]> {
  return waitFor(
    () => {
      const found = readAuditEntries(auditDir).filter(match);
      return found.length >= expected && found;
    },
    30_000,
    `${expected} matching audit entries`,
    100,
  );
}

export async function startAuditWriter(redisUrl: string, auditDir: string): Promise<{ stop(): Promise<void> }> {
  const { child, output, exited } = spawnNode(['dist/services/audit-writer/main.js'], {
    ...baseTestEnv(),
    REDIS_URL: redisUrl,
    AUDIT_DIR: auditDir,
    MEDIA_ROOT: path.dirname(auditDir),
    LOG_LEVEL: 'warn',
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  await untilAuditWriterReady(redisUrl, () => (child.exitCode !== null ? `audit writer exited with ${child.exitCode}:\n${output()}` : null)).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { stop };
}

/** Wait until an audit writer holds its lease in this Redis (it then sequences what record() submits). */
export async function untilAuditWriterReady(redisUrl: string, failure: () => string | null = () => null): Promise<void> {
  const redis = new Redis(redisUrl);
  redis.on('error', () => {});
  try {
    await waitFor(async () => {
      const why = failure();
      if (why) throw new Error(why);
      return (await redis.exists(AUDIT_LEASE_KEY)) === 1;
    }, 30_000, 'the audit writer to take its lease');
  } finally {
    redis.disconnect();
  }
}
