/** Processes as /proc shows them: for tests that check nothing is left running. */
import { readdirSync, readFileSync } from 'node:fs';

/** pids of the live children of `parent`, optionally only those whose command line contains `entry`. */
export function childPids(parent: number, entry?: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid === parent && (entry === undefined || readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(entry));
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** pids of live processes whose command line contains every one of `parts`. */
export function pidsWith(...parts: string[]): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return parts.every((p) => cmdline.includes(p));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The parent of `pid` (null once it is gone). */
export function parentPid(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}
