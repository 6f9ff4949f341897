/**
 * Disk usage of the media volume (MEDIA_ROOT) as Prometheus gauges, read with
 * statfs(2) at scrape time: the "disk > 85 %" alert is computed from these.
 * Every process that mounts the volume exports them, labelled with its function;
 * the alert takes the max, so any replica is enough.
 */
import { statfs } from 'node:fs/promises';
import { gauge } from './metrics.js';

export interface DiskUsage {
  sizeBytes: number;
  /** Bytes an unprivileged process may still write (statfs f_bavail, as `df` shows). */
  availableBytes: number;
}

export async function diskUsage(dir: string): Promise<DiskUsage> {
  const s = await statfs(dir);
  return { sizeBytes: s.blocks * s.bsize, availableBytes: s.bavail * s.bsize };
}

/**
 * Register the MEDIA_ROOT gauges; statfs runs on every scrape (microseconds). If the
 * volume cannot be read the gauges keep no fresh value rather than failing the scrape.
 */
export function registerDiskUsageMetrics(mediaRoot: string): void {
  gauge({
    name: 'pulsevault_media_volume_size_bytes',
    help: 'Size of the filesystem holding MEDIA_ROOT, in bytes.',
    async collect() {
      const usage = await diskUsage(mediaRoot).catch(() => null);
      if (usage) this.set(usage.sizeBytes);
    },
  });
  gauge({
    name: 'pulsevault_media_volume_available_bytes',
    help: 'Bytes still writable by PulseVault on the filesystem holding MEDIA_ROOT (as df shows).',
    async collect() {
      const usage = await diskUsage(mediaRoot).catch(() => null);
      if (usage) this.set(usage.availableBytes);
    },
  });
}
