/** What every scenario gets: the mode's sizes, a scratch directory, the running stack. */
import type { BenchStack } from './stack.js';

export type Mode = 'quick' | 'full';

export interface Sizes {
  uploadBytes: number;
  chunkBytes: number;
  /** Length of each wrk run. */
  wrkSeconds: number;
  /** Runs of each hyperfine reference. */
  hyperfineRuns: number;
  /** Length of the generated 1080p30 clip for the transcode scenario. */
  clipSeconds: number;
  queueJobs: number;
  auditWriters: number;
  auditEntriesPerWriter: number;
}

const MIB = 1024 * 1024;

export const SIZES: Record<Mode, Sizes> = {
  quick: { uploadBytes: 256 * MIB, chunkBytes: 64 * MIB, wrkSeconds: 5, hyperfineRuns: 3, clipSeconds: 6, queueJobs: 20, auditWriters: 4, auditEntriesPerWriter: 2000 },
  full: { uploadBytes: 1024 * MIB, chunkBytes: 64 * MIB, wrkSeconds: 15, hyperfineRuns: 5, clipSeconds: 20, queueJobs: 200, auditWriters: 4, auditEntriesPerWriter: 5000 },
};

export interface BenchContext {
  mode: Mode;
  sizes: Sizes;
  scratch: string;
  stack: BenchStack;
  /** Progress on stderr (the table goes to stdout). */
  progress(message: string): void;
}

export const MIB_BYTES = MIB;
/** Throughputs are in MB/s of 10^6 bytes, as wrk and most tools print them. */
export const megabytesPerSecond = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
