/** The benchmark table's rules (no speed is asserted here: figures live in `npm run bench`). */
import { describe, expect, it } from 'vitest';
import { nginxConfig } from '../scripts/bench/nginx.js';
import { formatNumber, percentile, ratio, renderTable, type Row } from '../scripts/bench/table.js';
import { commandLine } from '../scripts/bench/tools.js';

const row = (over: Partial<Row> = {}): Row => ({
  scenario: 'S',
  pulsevault: { value: 50, unit: 'req/s' },
  reference: { value: 200, unit: 'req/s' },
  referenceName: 'nginx',
  better: 'higher',
  commands: ['wrk -c50 url'],
  ...over,
});

describe('ratio', () => {
  it('is PulseVault ÷ reference', () => {
    expect(ratio(row())).toBe(0.25);
  });

  it('is absent when either side was not measured, never guessed', () => {
    expect(ratio(row({ reference: null }))).toBeNull();
    expect(ratio(row({ pulsevault: null }))).toBeNull();
    expect(ratio(row({ reference: { value: 0, unit: 's' } }))).toBeNull();
  });
});

describe('formatNumber', () => {
  it('keeps three significant digits without exponents', () => {
    expect(formatNumber(21350.4)).toBe('21350');
    expect(formatNumber(135.2)).toBe('135');
    expect(formatNumber(12.345)).toBe('12.3');
    expect(formatNumber(0.639)).toBe('0.639');
    expect(formatNumber(0.01234)).toBe('0.0123');
    expect(formatNumber(0)).toBe('0');
  });
});

describe('percentile', () => {
  it('takes the nearest rank', () => {
    const sample = Array.from({ length: 200 }, (_, i) => 200 - i); // 200 … 1, unsorted order
    expect(percentile(sample, 50)).toBe(100);
    expect(percentile(sample, 99)).toBe(198);
    expect(percentile([7], 99)).toBe(7);
  });

  it('refuses an empty sample', () => {
    expect(() => percentile([], 50)).toThrow(/empty/);
  });
});

describe('renderTable', () => {
  it('prints each row with its ratio and numbered commands; identical commands share a number', () => {
    const md = renderTable({ title: 'T', context: ['machine: 2 cores'] }, [
      row({ scenario: 'stream | segment', commands: ['wrk a', 'nginx -c conf'] }),
      row({ scenario: 'ranges', better: 'lower', pulsevault: { value: 2, unit: 's' }, reference: { value: 1, unit: 's' }, commands: ['wrk b', 'nginx -c conf'] }),
    ]);
    expect(md).toContain('- machine: 2 cores');
    expect(md).toContain('| stream \\| segment | 50.0 req/s | 200 req/s (nginx) | 0.250× (higher is better) | [1] [2] |');
    expect(md).toContain('| ranges | 2.00 s | 1.00 s (nginx) | 2.00× (lower is better) | [3] [2] |');
    expect(md).toContain('1. `wrk a`\n2. `nginx -c conf`\n3. `wrk b`');
  });

  it('says "not measured" for a missing reference and leaves the ratio empty', () => {
    const md = renderTable({ title: 'T', context: [] }, [row({ reference: null, note: 'skipped: nginx is not installed' })]);
    expect(md).toContain('| S | 50.0 req/s | nginx: not measured | — | [1] | skipped: nginx is not installed |');
  });
});

describe('commandLine', () => {
  it('quotes what a shell would split and puts env assignments first', () => {
    expect(commandLine('/usr/bin/wrk', ['-c50', 'http://h/p?token=a&b'], { BENCH_BODY: '{"a":1}' })).toBe(`BENCH_BODY='{"a":1}' wrk -c50 'http://h/p?token=a&b'`);
  });
});

describe('nginxConfig', () => {
  it('keeps nginx in the foreground with every path inside its scratch directory', () => {
    const conf = nginxConfig({ dir: '/tmp/x/nginx', port: 4321, root: '/tmp/x/media/videos', user: null });
    expect(conf).toContain('daemon off;');
    expect(conf).toContain('listen 127.0.0.1:4321;');
    expect(conf).toContain('root /tmp/x/media/videos;');
    const paths = [...conf.matchAll(/(?:pid|error_log|access_log|_temp_path) (\/\S+?)[;\s]/g)].map((m) => m[1]!);
    expect(paths.length).toBe(8);
    for (const p of paths) expect(p.startsWith('/tmp/x/nginx/')).toBe(true);
    expect(conf).not.toContain('user ');
    expect(nginxConfig({ dir: '/d', port: 1, root: '/r', user: 'root' })).toContain('user root;');
  });
});
