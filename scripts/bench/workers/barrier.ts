/** What the audit benchmark's worker processes share: the start barrier, the event, the result line. */
import { once } from 'node:events';
import type { AuditEvent } from '../../../shared/audit/client.js';

/** Entries each worker process writes before the clock starts (its loops share them). */
export const WARM_UP_RECORDS = 3000;

/** Resolves on the first line on stdin (the harness writes one to every worker at once). */
export async function awaitGo(): Promise<void> {
  process.stdout.write('ready\n');
  await once(process.stdin, 'data');
  process.stdin.pause();
}

/** An access entry as the stream function records it (ids only). */
export function benchEvent(requestId: string): AuditEvent {
  return {
    category: 'access',
    action: 'stream',
    outcome: 'granted',
    actor: { userId: 'bench-user', role: null },
    videoId: '00000000-0000-4000-8000-000000000000',
    clientIp: '127.0.0.1',
    requestId,
  };
}

export interface WorkerResult {
  count: number;
  startMs: number;
  endMs: number;
}

export function report(result: WorkerResult): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
