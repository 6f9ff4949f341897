/**
 * External tools the benchmarks drive (wrk, hyperfine, openssl, ffmpeg, nginx):
 * finding them, running them, and reading their results. A tool that is not
 * installed makes its figure "not measured", never an estimate.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { which } from '../../services/devstack/which.js';

export { which };

export const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
export const LUA_DIR = path.join(ROOT, 'scripts/bench/lua');

const execFileAsync = promisify(execFile);


export class ToolMissing extends Error {
  constructor(readonly tool: string) {
    super(`${tool} is not installed`);
  }
}

export function requireTool(name: string): string {
  const file = which(name);
  if (!file) throw new ToolMissing(name);
  return file;
}

/** A command line as a reader would type it (env assignments first, arguments quoted when needed). */
export function commandLine(cmd: string, args: readonly string[], env: Record<string, string> = {}): string {
  const quote = (s: string) => (/^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [...Object.entries(env).map(([k, v]) => `${k}=${quote(v)}`), path.basename(cmd), ...args.map(quote)].join(' ');
}

/** Run to completion; rejects with stderr on a non-zero exit. */
export async function run(cmd: string, args: readonly string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(cmd, [...args], {
    maxBuffer: 64 * 1024 * 1024,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    env: { ...process.env, ...options.env },
  });
}

/** Wall time of one run of a command, in seconds (for runs too long to repeat under hyperfine). */
export async function timeOnce(cmd: string, args: readonly string[], options: { env?: Record<string, string> } = {}): Promise<number> {
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(cmd)} exited with ${code}: ${stderr.slice(-2000)}`))));
  });
  return (performance.now() - started) / 1000;
}

export interface WrkResult {
  requests: number;
  bytes: number;
  seconds: number;
  requestsPerSecond: number;
  megabytesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Socket errors plus non-2xx/3xx answers. */
  errors: number;
  command: string;
}

export interface WrkOptions {
  url: string;
  connections: number;
  threads: number;
  seconds: number;
  /** A script in scripts/bench/lua (each reports through report.lua). */
  script: 'report.lua' | 'post-json.lua' | 'ranges.lua' | 'segments.lua';
  env?: Record<string, string>;
  /** How the URL is printed in the command (a token replaced by $TOKEN). */
  shownUrl?: string;
}

export async function wrk(o: WrkOptions): Promise<WrkResult> {
  const bin = requireTool('wrk');
  const script = path.join(LUA_DIR, o.script);
  const args = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '10s', '-s', script];
  const { stdout } = await run(bin, [...args, o.url], { env: o.env ?? {} });
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
  const r = JSON.parse(line.slice('WRK_JSON '.length)) as {
    requests: number;
    bytes: number;
    durationUs: number;
    errors: Record<string, number>;
    p50Us: number;
    p99Us: number;
  };
  const seconds = r.durationUs / 1e6;
  const shownArgs = [...args.slice(0, -1), path.relative(ROOT, script), o.shownUrl ?? o.url];
  return {
    requests: r.requests,
    bytes: r.bytes,
    seconds,
    requestsPerSecond: r.requests / seconds,
    megabytesPerSecond: r.bytes / 1e6 / seconds,
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
    errors: Object.values(r.errors).reduce((a, b) => a + b, 0),
    command: commandLine(bin, shownArgs, o.env ?? {}),
  };
}

/** Mean wall time (s) of `runs` runs (after one warm-up) of a shell command under hyperfine. */
export async function hyperfine(command: string, runs: number, scratchDir: string): Promise<{ meanSeconds: number; command: string }> {
  const bin = requireTool('hyperfine');
  const args = ['--runs', String(runs), '--warmup', '1', '--style', 'none'];
  const json = path.join(scratchDir, 'hyperfine.json');
  await run(bin, [...args, '--export-json', json, command]);
  const result = JSON.parse(readFileSync(json, 'utf8')) as { results: { mean: number }[] };
  return { meanSeconds: result.results[0]!.mean, command: commandLine(bin, [...args, command]) };
}
