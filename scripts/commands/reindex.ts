/**
 * `pulsevault reindex [--json]`: rebuild or reconcile the PostgreSQL metadata
 * mirror (METADATA_DSN) from VIDEO_DIR, the source of truth. Safe to run beside
 * production and as often as wanted (k8s/mirror/reindex-cronjob.yaml runs it hourly,
 * behind the automatic catch-up of shared/mirror/catch-up.ts).
 *
 * Prints one line with the rows added, updated and removed (JSON with --json);
 * logs go to stderr. Exit 0 when done, 64 on bad usage; a failure is one line
 * naming the fix with its sysexits status (docs/operations.md): 66 VIDEO_DIR
 * missing, 69 PostgreSQL does not answer, 77 it refused the login, 78 the
 * database or DSN is wrong; 1 anything else.
 */
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';
import { errorCode, MetadataMirror } from '../../shared/mirror/mirror.js';
import { reindex } from '../../shared/mirror/reconcile.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

export const summary = 'reconcile the PostgreSQL metadata mirror (METADATA_DSN) with VIDEO_DIR';

export async function run(args: string[]): Promise<number> {
  const unknown = args.filter((a) => a !== '--json');
  if (unknown.length > 0) {
    process.stderr.write(`pulsevault reindex: unknown argument ${unknown[0]} (usage: pulsevault reindex [--json])\n`);
    return 64;
  }
  const config = loadConfigOrExit({ require: ['METADATA_DSN'] });
  const log = createLogger('reindex', config.logLevel, 2);
  const mirror = new MetadataMirror(config.metadataDsn!, config.metadataMirrorPhi, log);
  const started = Date.now();
  try {
    const report = await reindex(mirror, new MediaStore(config.videoDir, null, await openVideoKeys(config)), log);
    const seconds = (Date.now() - started) / 1000;
    process.stdout.write(
      args.includes('--json')
        ? `${JSON.stringify({ ...report, seconds })}\n`
        : `reindex: ${report.scanned} videos on disk; ${report.added} added, ${report.updated} updated, ${report.removed} removed, ` +
            `${report.unchanged} unchanged, ${report.invalid} with unreadable meta.json (${seconds.toFixed(1)} s)\n`,
    );
    return 0;
  } catch (err) {
    const failure = explainFailure(err, config.metadataDsn!, config.videoDir);
    // The one line is the answer; the details (possibly a server's wording) only when asked for.
    log.debug({ err }, 'reindex failed');
    process.stderr.write(`pulsevault reindex: ${failure.line}\n`);
    return failure.status;
  } finally {
    await mirror.close();
  }
}

/** Where the DSN points, without its password (never printed). */
function target(dsn: string): { where: string; user: string; database: string } {
  try {
    const url = new URL(dsn);
    return { where: url.host || 'localhost', user: decodeURIComponent(url.username) || '(default user)', database: decodeURIComponent(url.pathname.slice(1)) || '(default database)' };
  } catch {
    return { where: '(unparsable METADATA_DSN)', user: '?', database: '?' };
  }
}

/** A failed run as one line naming the fix, and its sysexits status. */
export function explainFailure(err: unknown, dsn: string, videoDir: string): { line: string; status: number } {
  const code = errorCode(err);
  const { where, user, database } = target(dsn);
  if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (err as NodeJS.ErrnoException).path === videoDir) {
    return { line: `VIDEO_DIR ${videoDir} does not exist (ENOENT); set MEDIA_ROOT or VIDEO_DIR to the media volume`, status: 66 };
  }
  switch (code) {
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ETIMEDOUT':
    case 'timeout':
    case '57P03':
      return { line: `PostgreSQL at ${where} does not answer (${code}); start it, or fix the host and port in METADATA_DSN`, status: 69 };
    case '28000':
    case '28P01':
      return { line: `PostgreSQL at ${where} refused user ${user} (${code}); fix the user or password in METADATA_DSN, or the server's pg_hba.conf`, status: 77 };
    case '42501':
      return { line: `user ${user} may not change the mirror's tables in ${database} (${code}); grant it the privileges or use the owner in METADATA_DSN`, status: 77 };
    case '3D000':
      return { line: `database ${database} does not exist at ${where} (${code}); create it (createdb ${database}) or fix METADATA_DSN`, status: 78 };
    case 'ERR_INVALID_URL':
      return { line: `METADATA_DSN is not a postgres:// URL (${code}); fix it`, status: 78 };
    default:
      return { line: `failed (${code}); run it again (it is idempotent), with LOG_LEVEL=debug for the details`, status: 1 };
  }
}
