/**
 * `pulsevault finalize failed` lists finalize journal entries parked as `failed`
 * (a step failed MAX_STEP_FAILURES times in a row); `pulsevault finalize retry <uploadId>`
 * puts one back at its step once the cause is fixed: the next finalize call or
 * recovery pass (≤ 1 min) resumes it. See docs/operations.md.
 */
import { FinalizeJournal } from '../../shared/finalize/journal.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { isUploadId } from '../../shared/uploads/ids.js';

export const summary = 'list finalizes parked as failed (`failed`), or resume one after fixing its cause (`retry <uploadId>`)';

const USAGE = 'usage: pulsevault finalize failed | pulsevault finalize retry <uploadId>\n';

export async function run(args: string[]): Promise<number> {
  const [action, uploadId, ...extra] = args;
  if (extra.length > 0 || !(action === 'failed' && !uploadId) && !(action === 'retry' && uploadId && isUploadId(uploadId))) {
    process.stderr.write(USAGE);
    return 64;
  }
  const journal = FinalizeJournal.of(loadConfigOrExit({ require: [] }).videoDir);
  if (action === 'retry') {
    const resumed = await journal.resume(uploadId!);
    if (!resumed) {
      process.stderr.write(`no failed finalize for upload ${uploadId}\n`);
      return 1;
    }
    process.stdout.write(`${JSON.stringify({ uploadId, videoId: resumed.videoId, resumesAt: resumed.state })}\n`);
    return 0;
  }
  for (const id of await journal.uploadIds()) {
    const entry = await journal.read(id);
    if (entry?.state !== 'failed') continue;
    process.stdout.write(`${JSON.stringify({ uploadId: id, videoId: entry.videoId, failedStep: entry.failedStep, lastError: entry.lastError, since: entry.updatedAt })}\n`);
  }
  return 0;
}
