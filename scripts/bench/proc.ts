/** Reading a process's memory from /proc (Linux). */
import { readFile } from 'node:fs/promises';

/** Peak resident set size (VmHWM) of a process, in KiB. */
export async function peakRssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(m[1]);
}
