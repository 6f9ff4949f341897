/**
 * Turns what the dash muxer wrote into the published HLS layout:
 * `master.m3u8` (BANDWIDTH, AVERAGE-BANDWIDTH, RESOLUTION, CODECS, FRAME-RATE),
 * `<rung>.m3u8` per rendition (`<rung>_<codec>.m3u8` for HEVC/AV1) and
 * `audio.m3u8`, over the same fMP4 segments as `manifest.mpd`.
 *
 * ffmpeg's own master lacks AVERAGE-BANDWIDTH and FRAME-RATE and declares the
 * nominal bitrate; ours declares what the segments on disk measure (Apple: the
 * declared peak must be within 10 % of the measured one). The video CODECS are
 * read from each rendition's init segment (`codec-string.ts`) and written into
 * the DASH manifest too, where ffmpeg put a bare `hvc1` for HEVC; the audio
 * codecs come from the manifest (ffmpeg's mp4a string is complete). The
 * manifest's false `bitstreamSwitching="true"` is corrected (finishManifest).
 */
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DOMParser, XMLSerializer, type Document, type Element } from '@xmldom/xmldom';
import HLS from 'hls-parser';
import { codecString, readVideoConfig } from './codec-string.js';
import { FFMPEG_MASTER_NAME, MANIFEST_NAME, ffmpegMediaPlaylist, initSegmentName, type StreamPlan } from './ffmpeg-command.js';

export const MASTER_NAME = 'master.m3u8';
export const AUDIO_PLAYLIST = 'audio.m3u8';

/** ffmpeg's DASH manifest, parsed once: writePlaylists reads its audio codecs, then corrects and rewrites it. */
export function parseManifest(xml: string): Document {
  return new DOMParser({
    onError: (level, message) => {
      if (level !== 'warning') throw new Error(`ffmpeg wrote a manifest that is not well-formed XML: ${message}`);
    },
  }).parseFromString(xml, 'application/xml');
}

const elements = (doc: Document, name: string) => Array.from(doc.getElementsByTagNameNS('*', name)) as Element[];

/** Representation id → codecs, its own or its AdaptationSet's. */
function declaredCodecs(doc: Document): Map<string, string> {
  const codecs = new Map<string, string>();
  for (const rep of elements(doc, 'Representation')) {
    const set = rep.parentNode as Element | null;
    codecs.set(rep.getAttribute('id') ?? '', rep.getAttribute('codecs') ?? set?.getAttribute('codecs') ?? '');
  }
  return codecs;
}

/**
 * ffmpeg's manifest, corrected: the codecs of the Representations named in
 * `codecs` (by id), and `bitstreamSwitching="false"` wherever ffmpeg claimed
 * true. Each rendition has an init segment of its own (its SPS, its size), so
 * segments of two renditions cannot be spliced without re-initialising the
 * decoder (ISO/IEC 23009-1 §5.3.3.2); a player that believed the flag could
 * skip the new init segment on a switch. Edited as XML; whitespace is kept.
 */
export function finishManifest(doc: Document, codecs: ReadonlyMap<string, string>): string {
  for (const rep of elements(doc, 'Representation')) {
    const value = codecs.get(rep.getAttribute('id') ?? '');
    if (value !== undefined) rep.setAttribute('codecs', value);
  }
  for (const set of elements(doc, 'AdaptationSet')) {
    if (set.getAttribute('bitstreamSwitching') === 'true') set.setAttribute('bitstreamSwitching', 'false');
  }
  return new XMLSerializer().serializeToString(doc);
}

interface Measured {
  /** Mean bits/s over the whole stream. */
  average: number;
  /** Highest bits/s of any full-length segment. */
  peak: number;
}

/** Rewrite ffmpeg's media playlist as a VOD playlist under its published name; measure its bitrate. */
async function publishMediaPlaylist(dir: string, from: string, to: string): Promise<Measured> {
  const playlist = HLS.parse(await readFile(path.join(dir, from), 'utf8'));
  if (playlist.isMasterPlaylist) throw new Error(`${from} is not a media playlist`);
  playlist.playlistType = 'VOD';
  let bits = 0;
  let seconds = 0;
  let peak = 0;
  const full = playlist.targetDuration * 0.5;
  for (const segment of playlist.segments) {
    // Wall-clock dates mean nothing for VOD and would only leak when the transcode ran.
    segment.programDateTime = undefined;
    const size = (await stat(path.join(dir, segment.uri))).size * 8;
    bits += size;
    seconds += segment.duration;
    if (segment.duration >= full) peak = Math.max(peak, size / segment.duration);
  }
  await writeFile(path.join(dir, to), HLS.stringify(playlist));
  await rm(path.join(dir, from));
  const average = seconds > 0 ? bits / seconds : 0;
  return { average, peak: Math.max(peak, average) };
}

export const mediaPlaylistName = (rung: string, codec: string) => (codec === 'h264' ? `${rung}.m3u8` : `${rung}_${codec}.m3u8`);

export interface PublishedVariant {
  rendition: string;
  codec: string;
  playlist: string;
  width: number;
  height: number;
  bandwidth: number;
  averageBandwidth: number;
  codecs: string;
}

/** Write master.m3u8 and the per-rendition playlists in `dir`; returns what the master lists. */
export async function writePlaylists(dir: string, streams: StreamPlan, fps: number | null): Promise<PublishedVariant[]> {
  const manifestPath = path.join(dir, MANIFEST_NAME);
  const manifest = parseManifest(await readFile(manifestPath, 'utf8'));
  const manifestCodecs = declaredCodecs(manifest);
  const audio = streams.audio
    ? { ...(await publishMediaPlaylist(dir, ffmpegMediaPlaylist(streams.audio.index), AUDIO_PLAYLIST)), codecs: manifestCodecs.get(String(streams.audio.index)) ?? 'mp4a.40.2' }
    : null;
  const videoCodecsById = new Map<string, string>();
  const variants: PublishedVariant[] = [];
  for (const s of streams.video) {
    const playlist = mediaPlaylistName(s.rung.name, s.codec);
    const measured = await publishMediaPlaylist(dir, ffmpegMediaPlaylist(s.index), playlist);
    const videoCodecs = codecString(readVideoConfig(await readFile(path.join(dir, initSegmentName(s.index)))));
    videoCodecsById.set(String(s.index), videoCodecs);
    variants.push({
      rendition: s.rung.name,
      codec: s.codec,
      playlist,
      width: s.rung.width,
      height: s.rung.height,
      bandwidth: Math.ceil(measured.peak + (audio?.peak ?? 0)),
      averageBandwidth: Math.ceil(measured.average + (audio?.average ?? 0)),
      codecs: audio ? `${videoCodecs},${audio.codecs}` : videoCodecs,
    });
  }
  const audioGroup = audio
    ? [new HLS.types.Rendition({ type: 'AUDIO', uri: AUDIO_PLAYLIST, groupId: 'audio', name: 'audio', isDefault: true, autoselect: true, forced: false, channels: '2' })]
    : [];
  const master = new HLS.types.MasterPlaylist({
    version: 7,
    independentSegments: true,
    variants: variants.map(
      (v) =>
        new HLS.types.Variant({
          uri: v.playlist,
          bandwidth: v.bandwidth,
          averageBandwidth: v.averageBandwidth,
          codecs: v.codecs,
          resolution: { width: v.width, height: v.height },
          ...(fps ? { frameRate: fps } : {}),
          audio: audioGroup,
        }),
    ),
  });
  await writeFile(manifestPath, finishManifest(manifest, videoCodecsById));
  await writeFile(path.join(dir, MASTER_NAME), HLS.stringify(master));
  await rm(path.join(dir, FFMPEG_MASTER_NAME), { force: true });
  return variants;
}
