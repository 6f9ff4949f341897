/**
 * The benchmark table: one row per measured figure, PulseVault beside its
 * reference from the same run, the ratio, and the exact commands behind both.
 * Pure functions (no I/O) so the rendering and ratio rules are testable.
 */

export interface Figure {
  value: number;
  unit: string;
}

export interface Row {
  scenario: string;
  pulsevault: Figure | null;
  reference: Figure | null;
  /** What the reference is (`nginx 1.22`, `openssl dgst -sha256`, …). */
  referenceName: string;
  /** 'higher' for rates (req/s, MB/s), 'lower' for times and memory. */
  better: 'higher' | 'lower';
  /** Exact commands (or the in-harness procedure) behind both figures. */
  commands: string[];
  /** Sample sizes, skips, anything a reader needs to judge the figure. */
  note?: string;
}

/** PulseVault ÷ reference, or null when either side was not measured. */
export function ratio(row: Pick<Row, 'pulsevault' | 'reference'>): number | null {
  if (!row.pulsevault || !row.reference || row.reference.value === 0) return null;
  return row.pulsevault.value / row.reference.value;
}

/** Three significant digits, no exponent: 1234 → "1234", 12.345 → "12.3", 0.01234 → "0.0123". */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return String(Math.round(value));
  if (abs === 0) return '0';
  const decimals = Math.max(0, 2 - Math.floor(Math.log10(abs)));
  return value.toFixed(decimals);
}

export function formatFigure(figure: Figure | null): string {
  return figure ? `${formatNumber(figure.value)} ${figure.unit}` : 'not measured';
}

export function formatRatio(row: Row): string {
  const r = ratio(row);
  if (r === null) return '—';
  return `${formatNumber(r)}× (${row.better} is better)`;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export interface TableHeader {
  title: string;
  /** Lines printed above the table (machine, mode, caveats). */
  context: string[];
}

/**
 * Markdown: the table, then the numbered commands it refers to (commands are
 * long; a table cell holds their numbers). Identical commands share a number.
 */
export function renderTable(header: TableHeader, rows: Row[]): string {
  const commandNumbers = new Map<string, number>();
  const numberOf = (command: string) => {
    if (!commandNumbers.has(command)) commandNumbers.set(command, commandNumbers.size + 1);
    return commandNumbers.get(command)!;
  };
  const lines = [
    `## ${header.title}`,
    '',
    ...header.context.map((c) => `- ${c}`),
    '',
    '| Scenario | PulseVault | Reference | Ratio (PulseVault ÷ reference) | Commands | Notes |',
    '|---|---|---|---|---|---|',
  ];
  for (const row of rows) {
    const refs = row.commands.map((c) => `[${numberOf(c)}]`).join(' ');
    const reference = row.reference ? `${formatFigure(row.reference)} (${row.referenceName})` : `${row.referenceName}: not measured`;
    lines.push(`| ${cell(row.scenario)} | ${cell(formatFigure(row.pulsevault))} | ${cell(reference)} | ${formatRatio(row)} | ${refs} | ${cell(row.note ?? '')} |`);
  }
  lines.push('', 'Commands:', '');
  for (const [command, n] of commandNumbers) lines.push(`${n}. \`${command.replace(/`/g, "'")}\``);
  return `${lines.join('\n')}\n`;
}

/** p-th percentile (0–100) by nearest rank of an unsorted sample. */
export function percentile(sample: readonly number[], p: number): number {
  if (sample.length === 0) throw new Error('percentile of an empty sample');
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}
