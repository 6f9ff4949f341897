/**
 * `pulsevault reindex [--json]`: rebuild or reconcile the PostgreSQL metadata
 * mirror (METADATA_DSN) from VIDEO_DIR, the source of truth. Safe to run beside
 * production and as often as wanted (k8s/mirror/reindex-cronjob.yaml runs it hourly,
 * behind the automatic catch-up of shared/mirror/catch-up.ts).
 *
 * Prints one line with the rows added, updated and removed (JSON with --json);
 * logs go to stderr. Exit 0 when done, 1 when the run failed, 64 on bad usage.
 */
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';
import { errorCode, MetadataMirror } from '../../shared/mirror/mirror.js';
import { reindex } from '../../shared/mirror/reconcile.js';

export const summary = 'reconcile the PostgreSQL metadata mirror (METADATA_DSN) with VIDEO_DIR';

export async function run(args: string[]): Promise<number> {
  const unknown = args.filter((a) => a !== '--json');
  if (unknown.length > 0) {
    process.stderr.write(`unknown argument: ${unknown[0]}\nusage: pulsevault reindex [--json]\n`);
    return 64;
  }
  const config = loadConfigOrExit({ require: ['METADATA_DSN'] });
  const log = createLogger('reindex', config.logLevel, 2);
  const mirror = new MetadataMirror(config.metadataDsn!, config.metadataMirrorPhi, log);
  const started = Date.now();
  try {
    const report = await reindex(mirror, new MediaStore(config.videoDir), log);
    const seconds = (Date.now() - started) / 1000;
    process.stdout.write(
      args.includes('--json')
        ? `${JSON.stringify({ ...report, seconds })}\n`
        : `reindex: ${report.scanned} videos on disk; ${report.added} added, ${report.updated} updated, ${report.removed} removed, ` +
            `${report.unchanged} unchanged, ${report.invalid} with unreadable meta.json (${seconds.toFixed(1)} s)\n`,
    );
    return 0;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'VIDEO_DIR not found' : errorCode(err);
    log.error({ code }, 'reindex failed');
    process.stderr.write(`reindex failed: ${code}\n`);
    return 1;
  } finally {
    await mirror.close();
  }
}
