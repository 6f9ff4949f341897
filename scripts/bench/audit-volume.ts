/**
 * A synthetic audit log at real volume, written straight with the chain's own code
 * (chainEntry, signed checkpoints, the signed manifest) rather than through the writer
 * process: what the writer would have left after `days` days of `perDay` access
 * entries spread over `videos` videos and `subjects` viewers. Used by the report bench
 * (6 M entries) and, small, by test/audit-report.test.ts.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { signCheckpoint, writeCheckpoint, writeManifest } from '../../shared/audit/checkpoint.js';
import { chainEntry, GENESIS_HASH, logFileName, type SubmittedEvent } from '../../shared/audit/entry.js';

export interface VolumeOptions {
  firstDay: string;
  days: number;
  perDay: number;
  /** The videos and subject pseudonyms entries are spread over (round robin, coprime strides). */
  videos: readonly string[];
  subjects: readonly string[];
}

const WRITE_BYTES = 4 * 1024 * 1024;

/** Writes the access files, their final checkpoints and the manifest; resolves with the file names. */
export async function writeAuditVolume(auditDir: string, signingKey: string, o: VolumeOptions): Promise<string[]> {
  mkdirSync(`${auditDir}/checkpoints`, { recursive: true });
  const files: string[] = [];
  let seq = 0;
  let prevHash = GENESIS_HASH;
  const dayMs = 86_400_000;
  const start = Date.parse(`${o.firstDay}T00:00:00.000Z`);
  for (let d = 0; d < o.days; d++) {
    const dayStart = start + d * dayMs;
    const name = logFileName('access', new Date(dayStart).toISOString().slice(0, 10));
    const fd = openSync(`${auditDir}/${name}`, 'w');
    const [firstSeq, chainIn] = [seq + 1, prevHash];
    let pending: string[] = [];
    let pendingBytes = 0;
    for (let i = 0; i < o.perDay; i++) {
      const n = d * o.perDay + i;
      const ts = new Date(dayStart + Math.floor((i * dayMs) / o.perDay)).toISOString();
      const granted = n % 50 !== 0;
      const event: SubmittedEvent = {
        category: 'access',
        action: 'stream',
        outcome: granted ? 'granted' : 'denied',
        reason: granted ? null : 'token_expired',
        actor: { userId: o.subjects[(n * 7) % o.subjects.length]!, role: 'viewer' },
        videoId: o.videos[(n * 13) % o.videos.length]!,
        clientIp: `10.${(n >> 8) & 255}.${n & 255}.0`,
        requestId: `req-${n.toString(36)}`,
        occurredAt: ts,
      };
      const { hash, line } = chainEntry(event, { seq: ++seq, ts, streamId: `${dayStart + i}-0`, prevHash });
      prevHash = hash;
      pending.push(line);
      pendingBytes += line.length + 1;
      if (pendingBytes >= WRITE_BYTES) {
        writeSync(fd, `${pending.join('\n')}\n`);
        [pending, pendingBytes] = [[], 0];
      }
    }
    if (pending.length > 0) writeSync(fd, `${pending.join('\n')}\n`);
    closeSync(fd);
    files.push(name);
    const final = d < o.days - 1;
    await writeCheckpoint(
      auditDir,
      signCheckpoint(signingKey, { v: 1, category: 'access', file: name, firstSeq, chainIn, seq, hash: prevHash, count: seq - firstSeq + 1, final, writtenAt: new Date().toISOString() }),
    );
  }
  await writeManifest(auditDir, signingKey, files);
  return files;
}
