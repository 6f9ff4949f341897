/**
 * The bitrate ladder: which rungs a source gets, their exact sizes and bitrates.
 *
 * Bitrates follow Apple's HLS authoring specification (H.264, 16:9, kbps):
 * 416x234 145, 640x360 365, 768x432 730/1100, 960x540 2000, 1280x720 3000/4500,
 * 1920x1080 6000/7800. Rungs Apple does not list are interpolated (480p) or
 * extrapolated (144p, 1440p, 2160p). HEVC and AV1 need less for the same
 * quality (Apple's HEVC table is ~0.5–0.6x its H.264 one).
 *
 * Sizes: a rung named `240p` has a short side near 240 (the short side, so a
 * portrait phone video gets the same ladder as a landscape one), never above the
 * source, even, and every rung has EXACTLY the same width:height ratio. The DASH
 * muxer refuses an adaptation set whose representations differ in picture aspect
 * ratio, and a player only switches within one set — so `scale=-2:240` (426x240,
 * 1.775) next to 1280x720 (1.778) is not allowed. The ratio is the source's
 * display aspect rounded to a small fraction (16:9 → rungs on a grid of 32x18:
 * 416x234, 640x360, 864x486, 1280x720, 1920x1080 — Apple's own 234-line rung);
 * the sample aspect ratio makes up the rounding so nothing is stretched.
 */
import type { RenditionName } from '../platform/config.js';

export type VideoCodecFamily = 'h264' | 'hevc' | 'av1';

/** Target short side and H.264 average bitrate (kbps) per rung name. */
export const LADDER_TABLE: Record<RenditionName, { shortSide: number; kbps: number }> = {
  '144p': { shortSide: 144, kbps: 100 },
  '240p': { shortSide: 240, kbps: 145 },
  '360p': { shortSide: 360, kbps: 365 },
  '480p': { shortSide: 480, kbps: 1100 },
  '720p': { shortSide: 720, kbps: 3000 },
  '1080p': { shortSide: 1080, kbps: 6000 },
  '1440p': { shortSide: 1440, kbps: 10_000 },
  '2160p': { shortSide: 2160, kbps: 16_000 },
};

/** Bitrate relative to H.264 at the same rung. */
export const CODEC_BITRATE_FACTOR: Record<VideoCodecFamily, number> = { h264: 1, hevc: 0.6, av1: 0.5 };

/** Peak rate allowed above the average (Apple: declared BANDWIDTH within 10 % of the measured peak). */
export const MAXRATE_FACTOR = 1.1;
/** VBV buffer: two seconds of the average rate, one segment. */
export const BUFSIZE_FACTOR = 2;

export const AUDIO_KBPS = 128;

export interface Rung {
  name: RenditionName;
  width: number;
  height: number;
  /** Sample aspect ratio `num/den` that keeps the source's display aspect exactly. */
  sar: string;
  kbps: number;
}

export interface SourceSize {
  /** Display size (rotation applied). */
  width: number;
  height: number;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** The smallest fraction long/short within 0.5 % of the source's ratio, scaled so both sides are even. */
export function aspectGrid(longSide: number, shortSide: number): { long: number; short: number } {
  const ratio = longSide / shortSide;
  let best = { long: longSide, short: shortSide, err: Infinity };
  for (let q = 1; q <= 64; q++) {
    const p = Math.round(ratio * q);
    const err = Math.abs(p / q - ratio) / ratio;
    if (err < best.err) best = { long: p, short: q, err };
    if (err < 0.005) break;
  }
  const g = gcd(best.long, best.short);
  let long = best.long / g;
  let short = best.short / g;
  if (long % 2 || short % 2) {
    long *= 2;
    short *= 2;
  }
  return { long, short };
}

/**
 * The rungs of `renditions` that fit the source (short side ≤ the source's),
 * smallest first, sizes on the aspect grid, duplicates (two names rounding to one
 * size) dropped.
 */
export function planLadder(source: SourceSize, renditions: readonly RenditionName[]): Rung[] {
  const landscape = source.width >= source.height;
  const srcShort = Math.min(source.width, source.height);
  const grid = aspectGrid(Math.max(source.width, source.height), srcShort);
  const maxSteps = Math.max(1, Math.floor(srcShort / grid.short));
  const rungAt = (name: RenditionName, steps: number): Rung => {
    const [width, height] = landscape ? [steps * grid.long, steps * grid.short] : [steps * grid.short, steps * grid.long];
    // SAR = display aspect of the source / picture aspect of the rung, as an exact fraction.
    const num = source.width * height;
    const den = source.height * width;
    const g = gcd(num, den);
    return { name, width, height, sar: `${num / g}/${den / g}`, kbps: LADDER_TABLE[name].kbps };
  };
  const names = [...renditions].sort((a, b) => LADDER_TABLE[a].shortSide - LADDER_TABLE[b].shortSide);
  const rungs: Rung[] = [];
  for (const name of names) {
    const target = LADDER_TABLE[name].shortSide;
    if (target > srcShort) continue;
    const steps = Math.min(maxSteps, Math.max(1, Math.round(target / grid.short)));
    if (rungs.some((r) => Math.min(r.width, r.height) === steps * grid.short)) continue;
    rungs.push(rungAt(name, steps));
  }
  // A source smaller than the smallest rung still gets one rung at (about) its own size.
  return rungs.length > 0 ? rungs : [rungAt(names[0]!, maxSteps)];
}
