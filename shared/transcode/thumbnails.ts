/**
 * Seek thumbnails: one frame per segment, 160 px wide, tiled into JPEG sprite
 * sheets (at most 10×10 tiles each), indexed by `thumbnails.vtt`: one WebVTT cue
 * per tile, `<sheet>.jpg#xywh=x,y,w,h` (the form players' thumbnail plug-ins and
 * the console read). They come out of the same ffmpeg run as the ladder (one more
 * branch of its `split`, no second decode): the whole video at once, or chunk by
 * chunk when it is fanned out, each range's sheets named by the range, one index
 * for the whole video written with the playlists. They sit in `hls/`, so the
 * token of the master (scope `hls/`) opens them.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SEGMENT_SECONDS } from './ffmpeg-command.js';
import type { Rung } from './ladder.js';

export const THUMBNAIL_SECONDS = SEGMENT_SECONDS;
export const THUMBNAIL_INDEX = 'thumbnails.vtt';
const THUMBNAIL_WIDTH = 160;
const MAX_TILES_PER_SIDE = 10;

/** A stretch of the video whose thumbnails one ffmpeg run makes: the whole video (range 0) or chunk n. */
export interface ThumbnailRange {
  index: number;
  start: number;
  seconds: number;
}

/** The extra ffmpeg output: a filter for one more branch of the split, and the output's arguments. */
export interface ThumbnailOutput {
  filter: string;
  outputArgs: string[];
}

const tilesIn = (seconds: number) => Math.max(1, Math.ceil(seconds / THUMBNAIL_SECONDS - 1e-6));

function sheetGrid(tiles: number): { columns: number; rows: number } {
  const columns = Math.min(MAX_TILES_PER_SIDE, tiles);
  return { columns, rows: Math.min(MAX_TILES_PER_SIDE, Math.ceil(tiles / columns)) };
}

/** Tile size: 160 px wide at the source's display aspect (the rung's SAR applied), even. */
function tileSize(rung: Rung): { width: number; height: number } {
  const [num, den] = rung.sar.split('/').map(Number) as [number, number];
  const displayAspect = (rung.width * num) / (den * rung.height);
  return { width: THUMBNAIL_WIDTH, height: Math.max(2, 2 * Math.round(THUMBNAIL_WIDTH / displayAspect / 2)) };
}

export const sheetName = (range: number, sheet: number) => `thumbs_${range}_${String(sheet).padStart(3, '0')}.jpg`;

export function thumbnailOutput(rung: Rung, range: ThumbnailRange, dir: string): ThumbnailOutput {
  const { width, height } = tileSize(rung);
  const { columns, rows } = sheetGrid(tilesIn(range.seconds));
  return {
    filter: `fps=1/${THUMBNAIL_SECONDS},scale=${width}:${height},setsar=1,tile=${columns}x${rows}`,
    outputArgs: ['-c:v', 'mjpeg', '-q:v', '5', '-f', 'image2', '-start_number', '0', path.join(dir, `thumbs_${range.index}_%03d.jpg`)],
  };
}

const timestamp = (seconds: number) => {
  const ms = Math.round(seconds * 1000);
  const hh = String(Math.floor(ms / 3_600_000)).padStart(2, '0');
  const mm = String(Math.floor(ms / 60_000) % 60).padStart(2, '0');
  const ss = String(Math.floor(ms / 1000) % 60).padStart(2, '0');
  return `${hh}:${mm}:${ss}.${String(ms % 1000).padStart(3, '0')}`;
};

/** `thumbnails.vtt` in `dir` for the ranges' sheets (in time order). */
export async function writeThumbnailIndex(dir: string, rung: Rung, ranges: ThumbnailRange[]): Promise<void> {
  const { width, height } = tileSize(rung);
  const lines = ['WEBVTT', ''];
  for (const range of ranges) {
    const tiles = tilesIn(range.seconds);
    const { columns, rows } = sheetGrid(tiles);
    const end = range.start + range.seconds;
    for (let i = 0; i < tiles; i++) {
      const at = i % (columns * rows);
      const x = (at % columns) * width;
      const y = Math.floor(at / columns) * height;
      const start = range.start + i * THUMBNAIL_SECONDS;
      lines.push(`${timestamp(start)} --> ${timestamp(Math.min(start + THUMBNAIL_SECONDS, end))}`, `${sheetName(range.index, Math.floor(i / (columns * rows)))}#xywh=${x},${y},${width},${height}`, '');
    }
  }
  await writeFile(path.join(dir, THUMBNAIL_INDEX), lines.join('\n'));
}
