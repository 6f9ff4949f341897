/** Reading the audit log the way an auditor would: the hash-chained files on disk. */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { TEST_AUDIT_KEY, TEST_HMAC_SECRET } from './stack.js';

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
  const child = spawn(process.execPath, ['dist/services/audit-writer/main.js'], {
    env: { PATH: process.env.PATH, HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, SECRETS_DIR: '/nonexistent', REDIS_URL: redisUrl, AUDIT_DIR: auditDir, MEDIA_ROOT: path.dirname(auditDir), LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
