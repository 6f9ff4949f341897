/**
 * `pulsevault scrub [--rate MB/s] [--video-dir DIR]`: integrity check of the
 * whole vault (shared/video/scrub.ts), paced to `--rate` MB/s. Problems are
 * printed as JSON lines on stdout (ids only, no PHI); a progress line goes to
 * stderr. Exit 0 when everything checks out, 1 when anything is wrong.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { scrub, type ScrubReport } from '../../shared/video/scrub.js';
import { videoKeysFromConfig } from '../../shared/keys/video-keys.js';

export const summary = 're-hash every original against meta.json (and meta.json itself; encrypted ones: every chunk tag); exit 1 on any mismatch';

const DEFAULT_RATE_MB = 50;
const MB = 1_000_000;

const gib = (bytes: number) => (bytes / 1024 ** 3).toFixed(2);
const describe = (r: ScrubReport) =>
  `scrub: ${r.videos} videos checked, ${gib(r.bytes)} GiB hashed in ${r.seconds.toFixed(1)} s (${(r.bytes / MB / Math.max(r.seconds, 0.001)).toFixed(1)} MB/s), ${r.problems} problems`;

/** A progress line at most once a second: rewritten in place on a terminal, appended every 10 s in a log. */
function progressPrinter(stream: NodeJS.WriteStream): (r: ScrubReport) => void {
  const interval = stream.isTTY ? 1 : 10;
  let last = 0;
  return (r) => {
    if (r.seconds - last < interval) return;
    last = r.seconds;
    stream.write(stream.isTTY ? `\r${describe(r)}\x1b[K` : `${describe(r)}\n`);
  };
}

export async function run(args: string[]): Promise<number> {
  let values: { rate?: string; 'video-dir'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { rate: { type: 'string' }, 'video-dir': { type: 'string' }, help: { type: 'boolean' } } }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 64;
  }
  if (values.help) {
    process.stderr.write(`usage: pulsevault scrub [--rate MB/s (default ${DEFAULT_RATE_MB}, 0 = unlimited)] [--video-dir DIR (default VIDEO_DIR)]\n`);
    return 0;
  }
  const rate = Number(values.rate ?? DEFAULT_RATE_MB);
  if (!Number.isFinite(rate) || rate < 0) {
    process.stderr.write(`--rate must be a number of MB/s, 0 for unlimited (got ${JSON.stringify(values.rate)})\n`);
    return 64;
  }
  // Scrub reads the disk only: it needs no secret but the KEK (encrypted originals are checked by decrypting them).
  const config = loadConfigOrExit({ require: [] });
  const videoDir = path.resolve(values['video-dir'] ?? config.videoDir);
  const keys = videoKeysFromConfig(config);

  const progress = progressPrinter(process.stderr);
  let report: ScrubReport;
  try {
    report = await scrub(videoDir, {
      bytesPerSecond: rate * MB,
      onProblem: (p) => process.stdout.write(`${JSON.stringify(p)}\n`),
      onProgress: progress,
      keys,
    });
  } catch (err) {
    process.stderr.write(`scrub: cannot read ${videoDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
    return 66; // EX_NOINPUT
  }
  process.stderr.write(`${process.stderr.isTTY ? '\r' : ''}${describe(report)}${process.stderr.isTTY ? '\x1b[K' : ''}\n`);
  return report.problems > 0 ? 1 : 0;
}
