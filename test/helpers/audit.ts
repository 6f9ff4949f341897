/** Reading the audit log the way an auditor would: the hash-chained files on disk. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { baseTestEnv, spawnNode } from './node-process.js';

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

/** A real audit writer (the sequencer) for tests that run functions without the whole stack. */
export function startAuditWriter(redisUrl: string, auditDir: string): { stop(): Promise<void> } {
  const { child, exited } = spawnNode(['dist/services/audit-writer/main.js'], {
    ...baseTestEnv(),
    REDIS_URL: redisUrl,
    AUDIT_DIR: auditDir,
    MEDIA_ROOT: path.dirname(auditDir),
    LOG_LEVEL: 'warn',
  });
  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
