/** The shell examples of our Markdown pages, for the tests that run them. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface CodeBlock {
  file: string;
  /** The HTML comment on the line before the fence (e.g. `docs/walkthrough.sh`), if any. */
  marker: string | null;
  lines: string[];
}

/** Every ```bash block of a Markdown file. */
export function bashBlocks(file: string): CodeBlock[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```bash') continue;
    const end = lines.indexOf('```', i + 1);
    const marker = /^<!-- (.+) -->$/.exec(lines[i - 1] ?? '')?.[1] ?? null;
    blocks.push({ file, marker, lines: lines.slice(i + 1, end) });
    i = end;
  }
  return blocks;
}

/** README.md and every page of docs/. */
export function documentationFiles(): string[] {
  return ['README.md', ...readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];
}

/** The body rows of the table between `<!-- name -->` and `<!-- /name -->` in a Markdown file, each as its cells. */
export function markedTable(file: string, name: string): string[][] {
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf(`<!-- ${name} -->\n`);
  const end = text.indexOf(`<!-- /${name} -->`, start);
  if (start < 0 || end < 0) throw new Error(`${file} has no table marked ${name}`);
  const rows = text.slice(start, end).split('\n').filter((l) => l.startsWith('|'));
  // Drop the header and its |---| line; a cell's text loses its surrounding spaces.
  return rows.slice(2).map((row) => row.slice(1, -1).split('|').map((cell) => cell.trim()));
}
