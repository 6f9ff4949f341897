/**
 * HEVC and AV1 ladders end to end: the real transcoder (ENABLE_HEVC / ENABLE_AV1)
 * on a tiny clip, every CODECS string checked against what ffmpeg itself reads
 * from the published files (ffprobe, and the parameter sets / sequence header
 * as ffmpeg's trace_headers parses them), every rendition decoded, and the
 * DASH manifest checked to list the same representations.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { XMLParser } from 'fast-xml-parser';
import HLS from 'hls-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEncodeCommand, SVT_AV1_PRESETS } from '../shared/transcode/ffmpeg-command.js';
import { planLadder } from '../shared/transcode/ladder.js';
import { checkEncoders, transcodeVideo } from '../shared/transcode/transcoder.js';
import { codecFamily, expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { startTranscoder, transcodeJob, type TranscoderHarness } from './helpers/transcoder.js';
import { addVideo } from './helpers/videos.js';

const run = promisify(execFile);
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-transcode-codecs-'));
let harness: TranscoderHarness;
let clip: string;

beforeAll(async () => {
  harness = await startTranscoder(tmp, { RENDITIONS: '144p,240p' });
  clip = await makeClip(path.join(tmp, 'clip.mp4'), { seconds: 2, width: 320, height: 240, fps: 25 });
});

afterAll(async () => {
  await harness.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface ProbedStream {
  codec_name: string;
  codec_tag_string: string;
  profile: string;
  level: number;
  pix_fmt: string;
  nb_read_frames: string;
}

/** ffprobe of a media playlist, decoding every frame of every segment (`-count_frames`). */
async function probeRendition(playlist: string): Promise<ProbedStream> {
  const { stdout, stderr } = await run('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,codec_tag_string,profile,level,pix_fmt,nb_read_frames', '-of', 'json', playlist]);
  expect(stderr, `decoding ${path.basename(playlist)}`).toBe('');
  return (JSON.parse(stdout) as { streams: [ProbedStream] }).streams[0];
}

/** The first value of each syntax element in the stream's headers, as ffmpeg's trace_headers bitstream filter parses them. */
async function headerFields(playlist: string): Promise<Map<string, number>> {
  const { stderr } = await run('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'info', '-i', playlist, '-map', '0:v', '-c', 'copy', '-bsf:v', 'trace_headers', '-frames:v', '1', '-f', 'null', '-']);
  const fields = new Map<string, number>();
  for (const m of stderr.matchAll(/^\[trace_headers @ [^\]]+\] \d+\s+(\S+)\s+[01]*\s*=\s*(\d+)$/gm)) {
    if (!fields.has(m[1]!)) fields.set(m[1]!, Number(m[2]));
  }
  return fields;
}

const PROFILE_NAMES: Record<string, Record<number, string>> = {
  h264: { 66: 'Baseline', 77: 'Main', 100: 'High' },
  hevc: { 1: 'Main', 2: 'Main 10' },
  av1: { 0: 'Main', 1: 'High', 2: 'Professional' },
};

/**
 * The codecs string the bitstream calls for, built from what ffmpeg parsed
 * (not from the init segment's configuration record our module reads), with
 * ffprobe's profile and level checked on the way.
 */
function codecsFromBitstream(probed: ProbedStream, h: Map<string, number>): string {
  const field = (name: string) => {
    const value = h.get(name);
    if (value === undefined) throw new Error(`trace_headers shows no ${name}`);
    return value;
  };
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  const bitDepth = /p12/.test(probed.pix_fmt) ? 12 : /p10/.test(probed.pix_fmt) ? 10 : 8;
  switch (probed.codec_name) {
    case 'h264': {
      const constraints = [0, 1, 2, 3, 4, 5].reduce((byte, i) => byte | (field(`constraint_set${i}_flag`) << (7 - i)), 0);
      // ffmpeg names one constrained profile: Baseline with constraint_set1.
      const profile = PROFILE_NAMES.h264![field('profile_idc')];
      expect(probed.profile).toBe(field('profile_idc') === 66 && constraints & 0x40 ? 'Constrained Baseline' : profile);
      expect(probed.level).toBe(field('level_idc'));
      return `${probed.codec_tag_string}.${hex(field('profile_idc'))}${hex(constraints)}${hex(field('level_idc'))}`;
    }
    case 'hevc': {
      let compat = 0;
      for (let j = 0; j < 32; j++) compat += field(`general_profile_compatibility_flag[${j}]`) * 2 ** j;
      const firstConstraintByte = ['progressive_source', 'interlaced_source', 'non_packed_constraint', 'frame_only_constraint'].reduce((byte, f, i) => byte | (field(`general_${f}_flag`) << (7 - i)), 0);
      // Main / Main 10: the other 44 constraint bits are reserved zeros.
      expect(field('general_reserved_zero_7bits') + field('general_one_picture_only_constraint_flag') + field('general_reserved_zero_35bits') + field('general_inbld_flag')).toBe(0);
      expect(probed.profile).toBe(PROFILE_NAMES.hevc![field('general_profile_idc')]);
      expect(probed.level).toBe(field('general_level_idc'));
      const space = ['', 'A', 'B', 'C'][field('general_profile_space')];
      const tier = field('general_tier_flag') ? 'H' : 'L';
      return `${probed.codec_tag_string}.${space}${field('general_profile_idc')}.${compat.toString(16).toUpperCase()}.${tier}${field('general_level_idc')}.${hex(firstConstraintByte).toUpperCase()}`;
    }
    case 'av1': {
      expect(probed.profile).toBe(PROFILE_NAMES.av1![field('seq_profile')]);
      expect(probed.level).toBe(field('seq_level_idx[0]'));
      expect(bitDepth).toBe(field('high_bitdepth') ? 10 : 8);
      // seq_tier is only coded above level 3.3 (seq_level_idx 7); below it is main.
      const tier = h.get('seq_tier[0]') ? 'H' : 'M';
      return `${probed.codec_tag_string}.${field('seq_profile')}.${String(probed.level).padStart(2, '0')}${tier}.${String(bitDepth).padStart(2, '0')}`;
    }
    default:
      throw new Error(`unexpected codec ${probed.codec_name}`);
  }
}

interface MpdRepresentation {
  id: string;
  codecs: string;
  width?: string;
  height?: string;
}

describe.each([
  ['hevc', 'ENABLE_HEVC', /^hvc1\.1\.6\.L\d+\.[0-9A-F]{2}$/],
  ['av1', 'ENABLE_AV1', /^av01\.0\.\d{2}M\.08$/],
] as const)('%s ladder', (family, flag, expectedShape) => {
  it(`with ${flag}=true: H.264 first, then ${family}; CODECS as the bitstream says; every rendition decodes; DASH lists the same`, async () => {
    const deps = harness.depsWith({ [flag]: 'true' });
    const codecs = await checkEncoders(deps.config);
    expect(codecs).toEqual(['h264', family]);
    const meta = await addVideo(harness.store, clip);
    await transcodeVideo(deps, codecs, transcodeJob(meta.videoId));

    const ladder = expectValidLadder(harness.store.dir(meta.videoId), { sourceDuration: meta.duration!, hasAudio: true, codecs });
    expect(ladder.renditions).toEqual(['144p', '240p', `144p_${family}`, `240p_${family}`]);
    expect(ladder.resolutions).toEqual(['192x144', '320x240', '192x144', '320x240']);

    const dir = path.join(harness.store.dir(meta.videoId), 'hls');
    const master = HLS.parse(readFileSync(path.join(dir, 'master.m3u8'), 'utf8'));
    if (!master.isMasterPlaylist) throw new Error('master.m3u8 is not a master playlist');
    const mpd = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (name) => ['AdaptationSet', 'Representation'].includes(name) }).parse(readFileSync(path.join(dir, 'manifest.mpd'), 'utf8')) as {
      MPD: { Period: { AdaptationSet: { contentType: string; Representation: MpdRepresentation[] }[] } };
    };
    const representations = new Map(mpd.MPD.Period.AdaptationSet.filter((s) => s.contentType === 'video').flatMap((s) => s.Representation.map((r) => [String(r.id), r] as const)));

    const listed: string[] = [];
    for (const variant of master.variants) {
      const videoCodecs = variant.codecs!.split(',')[0]!;
      if (codecFamily(videoCodecs) === family) expect(videoCodecs).toMatch(expectedShape);
      const playlist = path.join(dir, variant.uri);
      const [probed, headers] = await Promise.all([probeRendition(playlist), headerFields(playlist)]);
      expect(videoCodecs, variant.uri).toBe(codecsFromBitstream(probed, headers));
      expect(Number(probed.nb_read_frames), `${variant.uri} decodes every frame`).toBe(50);

      // The DASH Representation over the same segments (its id names the init segment) declares the same.
      const media = HLS.parse(readFileSync(playlist, 'utf8'));
      if (media.isMasterPlaylist) throw new Error(`${variant.uri} is a master playlist`);
      const id = /^init_(\d+)\.m4s$/.exec(media.segments[0]!.map!.uri)![1]!;
      expect(representations.get(id), `Representation ${id}`).toMatchObject({ codecs: videoCodecs, width: String(variant.resolution!.width), height: String(variant.resolution!.height) });
      listed.push(id);
    }
    expect(listed.sort()).toEqual([...representations.keys()].sort());
  });
});

describe('FFMPEG_PRESET for SVT-AV1', () => {
  const presets = ['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow', 'slower', 'veryslow'] as const;

  it('maps every x264 preset name to an SVT-AV1 preset, faster names to faster (higher) numbers', () => {
    const numbers = presets.map((p) => SVT_AV1_PRESETS[p]);
    expect(numbers.every((n) => Number.isInteger(n) && n >= 0 && n <= 13)).toBe(true);
    expect([...numbers].sort((a, b) => b - a)).toEqual(numbers);
    expect(new Set(numbers).size).toBe(numbers.length);
  });

  it('gives AV1 streams the mapped number and H.264/HEVC the name itself', () => {
    const rung = planLadder({ width: 320, height: 240 }, ['240p'])[0]!;
    const { args } = buildEncodeCommand({ source: 'in.mp4', outDir: 'out', rungs: [rung], codecs: ['h264', 'hevc', 'av1'], hasAudio: false, fps: 25, preset: 'slow', threads: 1 });
    const presetOf = (stream: number) => args[args.indexOf(`-preset:v:${stream}`) + 1];
    expect([presetOf(0), presetOf(1), presetOf(2)]).toEqual(['slow', 'slow', String(SVT_AV1_PRESETS.slow)]);
  });
});
