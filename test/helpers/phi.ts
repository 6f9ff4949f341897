/**
 * PHI leak check: look for given strings (a title, a description, a filename)
 * in every file under the audit directory (logs and checkpoints) and in the
 * captured output of every process, in the forms they travel in: as is,
 * base64 (tus Upload-Metadata) and URL-encoded.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

export interface PhiFinding {
  /** A file path, or `output`. */
  where: string;
  needle: string;
  form: 'plain' | 'base64' | 'url-encoded';
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

export function findPhi(sources: { auditDir: string; output: string }, needles: string[]): { findings: PhiFinding[]; filesScanned: number } {
  const files = filesUnder(sources.auditDir);
  const haystacks = [...files.map((f) => ({ where: f, text: readFileSync(f, 'utf8') })), { where: 'output', text: sources.output }];
  const findings: PhiFinding[] = [];
  for (const needle of needles) {
    const forms = [
      ['plain', needle],
      ['base64', Buffer.from(needle).toString('base64')],
      ['url-encoded', encodeURIComponent(needle)],
    ] as const;
    for (const { where, text } of haystacks) {
      for (const [form, value] of forms) {
        if (text.toLowerCase().includes(value.toLowerCase())) findings.push({ where, needle, form });
      }
    }
  }
  return { findings, filesScanned: files.length };
}
