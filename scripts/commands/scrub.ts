/**
 * `pulsevault scrub [--rate MB/s] [--video-dir DIR]`: integrity check of the
 * whole vault. For every video directory it verifies meta.json's own checksum
 * (shared/video/store.ts parseMeta), then re-hashes the original and compares it
 * with the checksum meta.json recorded at finalize. Problems are printed as JSON
 * lines on stdout (ids only, no PHI); a progress line goes to stderr.
 * Exit 0 when everything checks out, 1 when anything is wrong.
 *
 * It streams: VIDEO_DIR is read with opendir (no listing held in memory) and
 * each original is hashed in chunks, paced to `--rate` MB/s so a scrub can run
 * beside production without starving stream requests of disk bandwidth.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { opendir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { isVideoId, MetaCorruptError, parseMeta } from '../../shared/video/store.js';

export const summary = 're-hash every original against meta.json (and meta.json itself); exit 1 on any mismatch';

const DEFAULT_RATE_MB = 50;
const MB = 1_000_000;
const CHUNK = 4 * 1024 * 1024;

export type ProblemKind = 'meta_missing' | 'meta_corrupt' | 'original_missing' | 'original_unreadable' | 'size_mismatch' | 'checksum_mismatch';

export interface Problem {
  videoId: string;
  problem: ProblemKind;
  detail: string;
}

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Paces a byte stream to `bytesPerSecond` over the whole run: after each chunk it
 * waits until the time that many bytes are due at that rate. Rate 0 = unpaced.
 */
export class Pacer {
  private readonly start: number;
  private bytes = 0;

  constructor(
    private readonly bytesPerSecond: number,
    private readonly clock: Clock = realClock,
  ) {
    this.start = clock.now();
  }

  async consumed(n: number): Promise<void> {
    this.bytes += n;
    if (this.bytesPerSecond <= 0) return;
    const wait = this.start + (this.bytes / this.bytesPerSecond) * 1000 - this.clock.now();
    if (wait > 0) await this.clock.sleep(wait);
  }
}

async function sha256(file: string, pacer: Pacer, onBytes: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    onBytes(chunk.length);
    await pacer.consumed(chunk.length);
  }
  return `sha256:${hash.digest('hex')}`;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** Check one video directory; resolves with its problem, or null when it is intact. */
export async function scrubVideo(videoDir: string, videoId: string, pacer: Pacer, onBytes: (n: number) => void = () => {}): Promise<Problem | null> {
  const dir = path.join(videoDir, videoId);
  const problem = (kind: ProblemKind, detail: string): Problem => ({ videoId, problem: kind, detail });

  let raw: string;
  try {
    raw = await readFile(path.join(dir, 'meta.json'), 'utf8');
  } catch (err) {
    return problem('meta_missing', errno(err) === 'ENOENT' ? 'meta.json does not exist' : `meta.json unreadable (${errno(err)})`);
  }
  let meta;
  try {
    meta = parseMeta(videoId, raw);
  } catch (err) {
    if (err instanceof MetaCorruptError) return problem('meta_corrupt', err.message);
    throw err;
  }
  // The original's name comes from meta.json: it must name a file inside this directory.
  if (typeof meta.original !== 'string' || meta.original !== path.basename(meta.original) || meta.original.startsWith('.')) {
    return problem('meta_corrupt', 'meta.json names no valid original file');
  }
  const original = path.join(dir, meta.original);
  let size: number;
  try {
    size = (await stat(original)).size;
  } catch (err) {
    return problem('original_missing', errno(err) === 'ENOENT' ? `${meta.original} does not exist` : `${meta.original} unreadable (${errno(err)})`);
  }
  if (size !== meta.size) return problem('size_mismatch', `${meta.original} has ${size} bytes, meta.json records ${meta.size}`);
  let actual: string;
  try {
    actual = await sha256(original, pacer, onBytes);
  } catch (err) {
    return problem('original_unreadable', `${meta.original} could not be read (${errno(err) ?? String(err)})`);
  }
  if (actual !== meta.checksum) return problem('checksum_mismatch', `${meta.original} hashes to ${actual}, meta.json records ${meta.checksum}`);
  return null;
}

export interface ScrubReport {
  videos: number;
  problems: number;
  skipped: number;
  bytes: number;
  seconds: number;
}

export async function scrub(
  videoDir: string,
  options: { rateMBps: number; onProblem(p: Problem): void; onProgress(r: ScrubReport): void; clock?: Clock },
): Promise<ScrubReport> {
  const clock = options.clock ?? realClock;
  const started = clock.now();
  const pacer = new Pacer(options.rateMBps * MB, clock);
  const report: ScrubReport = { videos: 0, problems: 0, skipped: 0, bytes: 0, seconds: 0 };
  const tick = () => {
    report.seconds = (clock.now() - started) / 1000;
    options.onProgress(report);
  };
  for await (const entry of await opendir(videoDir)) {
    // Anything that is not a video directory (temp dirs of an in-flight publish, stray files) is not ours to judge.
    if (!entry.isDirectory() || !isVideoId(entry.name)) {
      report.skipped++;
      continue;
    }
    const found = await scrubVideo(videoDir, entry.name, pacer, (n) => {
      report.bytes += n;
      tick();
    });
    report.videos++;
    if (found) {
      report.problems++;
      options.onProblem(found);
    }
    tick();
  }
  report.seconds = (clock.now() - started) / 1000;
  return report;
}

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
  // Scrub reads the disk only: it needs no secret.
  const videoDir = path.resolve(values['video-dir'] ?? loadConfigOrExit({ require: [] }).videoDir);

  const progress = progressPrinter(process.stderr);
  let report: ScrubReport;
  try {
    report = await scrub(videoDir, {
      rateMBps: rate,
      onProblem: (p) => process.stdout.write(`${JSON.stringify(p)}\n`),
      onProgress: progress,
    });
  } catch (err) {
    process.stderr.write(`scrub: cannot read ${videoDir}: ${errno(err) ?? (err as Error).message}\n`);
    return 66; // EX_NOINPUT
  }
  process.stderr.write(`${process.stderr.isTTY ? '\r' : ''}${describe(report)}${process.stderr.isTTY ? '\x1b[K' : ''}\n`);
  return report.problems > 0 ? 1 : 0;
}
