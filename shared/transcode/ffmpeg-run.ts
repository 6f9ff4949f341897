/**
 * Runs ffmpeg (spawned directly: fluent-ffmpeg cannot express one `dash` output
 * with per-stream options in a filter_complex graph without passing raw args
 * anyway) and reads its `-progress pipe:1` key=value blocks.
 *
 * A closed pipe does not stop an orphaned ffmpeg: Node ignores SIGPIPE and its
 * children inherit that, so ffmpeg would encode on beside the retry after its
 * transcoder is killed. ffmpeg is therefore started through `setpriv
 * --pdeathsig KILL` (util-linux, in the function image), which sets
 * PR_SET_PDEATHSIG before exec: the kernel kills ffmpeg when our process dies.
 */
import { spawn, spawnSync } from 'node:child_process';
import { hideLoopbackUrls } from '../crypto/loopback.js';
import { AppError } from '../platform/errors.js';

export interface FfmpegProgress {
  /** Seconds of output written so far. */
  outTimeSeconds: number;
  /** true on the last block (`progress=end`). */
  done: boolean;
}

/** Splits ffmpeg's `-progress` output into blocks; one callback per `progress=` line. */
export class ProgressParser {
  private buffer = '';
  private outTimeUs = 0;

  constructor(private readonly onProgress: (p: FfmpegProgress) => void) {}

  push(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      const eq = line.indexOf('=');
      if (eq === -1) continue;
      const key = line.slice(0, eq);
      const value = line.slice(eq + 1);
      if (key === 'out_time_us' || key === 'out_time_ms') {
        // Both keys carry microseconds (out_time_ms is misnamed in ffmpeg); N/A before the first frame.
        const us = Number(value);
        if (Number.isFinite(us) && us >= 0) this.outTimeUs = us;
      } else if (key === 'progress') {
        this.onProgress({ outTimeSeconds: this.outTimeUs / 1e6, done: value === 'end' });
      }
    }
  }
}

/** ffmpeg's words for a full disk (on any output: segments, playlists, the chunk file). */
const NO_SPACE = /No space left on device/i;

export class FfmpegError extends AppError {
  constructor(readonly reason: string, message: string) {
    // A full disk is 507: the queue waits for space without spending an attempt (shared/transcode/job.ts).
    super(reason === NO_SPACE_REASON ? 507 : 500, reason, message);
  }
}
export const NO_SPACE_REASON = 'no_space';

export interface RunOptions {
  onProgress?: (p: FfmpegProgress) => void;
  signal?: AbortSignal;
}

let pdeathsigAvailable: boolean | null = null;

/** Whether ffmpeg dies with this process (setpriv present); without it (not Linux) an orphan runs to its end. */
export function ffmpegDiesWithParent(): boolean {
  pdeathsigAvailable ??= spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
  return pdeathsigAvailable;
}

/** Run ffmpeg to completion; rejects with FfmpegError (`ffmpeg_failed`, `no_space`, `aborted`). */
export function runFfmpeg(args: string[], o: RunOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(new FfmpegError('aborted', String(o.signal.reason ?? 'aborted')));
    const [command, ...argv] = ffmpegDiesWithParent() ? ['setpriv', '--pdeathsig', 'KILL', '--', 'ffmpeg', ...args] : ['ffmpeg', ...args];
    const child = spawn(command!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const parser = new ProgressParser((p) => o.onProgress?.(p));
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => parser.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    const abort = () => child.kill('SIGKILL');
    o.signal?.addEventListener('abort', abort, { once: true });
    child.once('error', (err) => reject(new FfmpegError('ffmpeg_failed', `ffmpeg could not start: ${err.message}`)));
    child.once('close', (code, signal) => {
      o.signal?.removeEventListener('abort', abort);
      if (o.signal?.aborted) return reject(new FfmpegError('aborted', String(o.signal.reason ?? 'aborted')));
      if (code === 0) return resolve();
      // ffmpeg names its inputs: a loopback URL (a capability) never reaches a log line.
      const last = hideLoopbackUrls(stderr.trim().split('\n').slice(-3).join(' | '));
      reject(new FfmpegError(NO_SPACE.test(stderr) ? NO_SPACE_REASON : 'ffmpeg_failed', `ffmpeg exited with ${code ?? signal}: ${last}`));
    });
  });
}

/** Encoders this ffmpeg has (`ffmpeg -encoders`), by name. */
export function listEncoders(): Promise<Set<string>> {
  return new Promise((resolve, reject) => {
    const child = spawn('ffmpeg', ['-hide_banner', '-encoders'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('error', reject);
    child.once('close', () => {
      // Lines look like ` V....D libx264   libx264 H.264 / AVC ...`.
      resolve(new Set([...out.matchAll(/^\s*[VAS][.A-Z]{5}\s+(\S+)/gm)].map((m) => m[1]!)));
    });
  });
}
