/** Checks a published ladder the way a player would read it (HLS and DASH), with real parsers. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import HLS from 'hls-parser';
import { expect } from 'vitest';
import type { VideoCodecFamily } from '../../shared/transcode/ladder.js';

/** The shape of a complete RFC 6381 video codecs string per family (profile, level, …: never a bare tag). */
export const CODECS_PATTERN: Record<VideoCodecFamily, RegExp> = {
  h264: /^avc1\.[0-9a-f]{6}$/,
  hevc: /^hvc1\.[ABC]?\d+\.[0-9A-F]{1,8}\.[LH]\d+(\.[0-9A-F]{2}){1,6}$/,
  av1: /^av01\.[0-2]\.\d{2}[MH]\.(08|10|12)$/,
};

export interface LadderReport {
  renditions: string[];
  resolutions: string[];
  durationSeconds: number;
  segmentCount: number;
}

function mediaPlaylist(dir: string, uri: string) {
  const p = HLS.parse(readFileSync(path.join(dir, uri), 'utf8'));
  if (p.isMasterPlaylist) throw new Error(`${uri} is a master playlist`);
  return p;
}

/** The codec family of a variant's CODECS (its video part), or null if it is none of ours. */
export function codecFamily(codecs: string): VideoCodecFamily | null {
  const videoPart = codecs.split(',')[0]!;
  return (Object.keys(CODECS_PATTERN) as VideoCodecFamily[]).find((f) => CODECS_PATTERN[f].test(videoPart)) ?? null;
}

/**
 * Asserts everything the issue lists; returns what was found for further checks.
 * `codecs`: the families enabled (H.264 only unless given), each listed with
 * complete codecs strings, H.264 first (a client that plays only H.264 starts there).
 */
export function expectValidLadder(videoDir: string, o: { sourceDuration: number; hasAudio: boolean; codecs?: VideoCodecFamily[]; sealedImages?: boolean }): LadderReport {
  const codecs = o.codecs ?? ['h264'];
  const dir = path.join(videoDir, 'hls');
  const master = HLS.parse(readFileSync(path.join(dir, 'master.m3u8'), 'utf8'));
  if (!master.isMasterPlaylist) throw new Error('master.m3u8 is not a master playlist');
  expect(master.variants.length).toBeGreaterThan(0);

  const boundaries: number[][] = [];
  let segmentCount = 0;
  for (const v of master.variants) {
    expect(v.bandwidth).toBeGreaterThan(0);
    expect(v.averageBandwidth).toBeGreaterThan(0);
    expect(v.averageBandwidth!).toBeLessThanOrEqual(v.bandwidth);
    expect(v.resolution!.width % 2).toBe(0);
    expect(v.resolution!.height % 2).toBe(0);
    expect(v.frameRate).toBeGreaterThan(0);
    expect(v.codecs!.split(',').slice(1)).toEqual(o.hasAudio ? ['mp4a.40.2'] : []);
    expect(v.audio.length > 0).toBe(o.hasAudio);
    const media = mediaPlaylist(dir, v.uri);
    expect(media.playlistType).toBe('VOD');
    expect(media.endlist).toBe(true);
    let t = 0;
    const cuts: number[] = [];
    for (const s of media.segments) {
      expect(existsSync(path.join(dir, s.uri)), s.uri).toBe(true);
      expect(existsSync(path.join(dir, s.map!.uri)), s.map!.uri).toBe(true);
      t += s.duration;
      cuts.push(Math.round(t * 1000));
      segmentCount++;
    }
    expect(Math.abs(t - o.sourceDuration)).toBeLessThanOrEqual(0.2);
    boundaries.push(cuts);
  }
  const families = master.variants.map((v) => codecFamily(v.codecs!));
  expect(families.filter((f, i) => f !== families[i - 1]), `codecs of ${master.variants.map((v) => v.codecs).join(' ')}`).toEqual(codecs);
  // Same segment boundaries on every rung: a player can switch at any segment.
  for (const cuts of boundaries) expect(cuts).toEqual(boundaries[0]);

  if (o.hasAudio) {
    const audio = master.variants[0]!.audio[0]!;
    const media = mediaPlaylist(dir, audio.uri!);
    for (const s of media.segments) expect(existsSync(path.join(dir, s.uri))).toBe(true);
  }

  const mpd = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(readFileSync(path.join(dir, 'manifest.mpd'), 'utf8')) as {
    MPD: { mediaPresentationDuration: string; Period: { AdaptationSet: unknown } };
  };
  const mpdSeconds = Number(/^PT(?:(\d+)M)?([\d.]+)S$/.exec(mpd.MPD.mediaPresentationDuration)?.slice(1).reduce((acc, x, i) => acc + (i === 0 ? Number(x ?? 0) * 60 : Number(x)), 0));
  expect(Math.abs(mpdSeconds - o.sourceDuration)).toBeLessThanOrEqual(0.2);
  const sets = ([] as { contentType: string; bitstreamSwitching?: string; Representation: unknown }[]).concat(mpd.MPD.Period.AdaptationSet as never);
  // Each rendition has its own init segment: no set may claim segments can be spliced across renditions.
  expect(sets.map((s) => s.bitstreamSwitching ?? 'false')).not.toContain('true');
  const videoSets = sets.filter((s) => s.contentType === 'video');
  expect(videoSets).toHaveLength(codecs.length);
  expect(videoSets.flatMap((s) => ([] as unknown[]).concat(s.Representation))).toHaveLength(master.variants.length);
  expect(sets.some((s) => s.contentType === 'audio')).toBe(o.hasAudio);

  const poster = readFileSync(path.join(dir, 'poster.jpg'));
  // An encrypted video's images are sealed (shared/crypto/images.ts), in the original's format.
  if (o.sealedImages) expect(poster.subarray(0, 8).toString('latin1')).toBe('PVAEAD01');
  else expect(poster.subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
  expect(readdirSync(videoDir).filter((n) => n.startsWith('.'))).toEqual([]);

  return {
    renditions: master.variants.map((v) => v.uri.replace(/\.m3u8$/, '')),
    resolutions: master.variants.map((v) => `${v.resolution!.width}x${v.resolution!.height}`),
    durationSeconds: boundaries[0]!.at(-1)! / 1000,
    segmentCount,
  };
}
