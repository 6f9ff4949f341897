/**
 * The documentation's API examples run against the local stack (booted as `npm start` boots it,
 * in development mode with its dev token and dev audit key), so a stale step fails here:
 * docs/walkthrough.sh, which docs/api.md must show line for line, and the README's taste.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bashBlocks, documentationFiles } from './helpers/markdown.js';
import { makeClip } from './helpers/media.js';
import { runToExit, type Finished } from './helpers/node-process.js';
import { startStack, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

const SCRIPT = 'docs/walkthrough.sh';
const nonEmptyLines = (lines: string[]) => lines.filter((l) => l.trim() !== '');

describe('docs/api.md and docs/walkthrough.sh', () => {
  it('the page shows the script line for line, in order', () => {
    const script = readFileSync(SCRIPT, 'utf8');
    const body = script.slice(script.indexOf('set -euo pipefail')).split('\n');
    const shown = bashBlocks('docs/api.md')
      .filter((b) => b.marker === SCRIPT)
      .flatMap((b) => b.lines);
    expect(nonEmptyLines(shown)).toEqual(nonEmptyLines(body));
  });
});

// Relative Locations as `npm start` answers them; absolute ones as with PUBLIC_URL set (k8s/ sets it).
// The two stacks run side by side: a walkthrough mostly waits (uploads, a short transcode, polling).
describe.concurrent.each([
  ['relative', false],
  ['absolute', true],
])('the walkthrough against the local stack, with %s tus Locations', (locations, publicUrl) => {
  let stack: TestStack;
  let jwt: string;
  let workDir: string;
  /** The run of docs/walkthrough.sh every test below reads. */
  let walk: Finished;
  /** What it printed; the first printed line that starts with `prefix` and contains `part`. */
  const printed = () => walk.stdout;
  const lineOf = (prefix: string, part = '') => printed().split('\n').find((l) => l.startsWith(prefix) && l.includes(part));

  beforeAll(async () => {
    workDir = mkdtempSync(path.join(tmpdir(), 'pv-walkthrough-'));
    // As `npm start` on a developer's machine: no auth configured (dev token), no AUDIT_SIGNING_KEY (dev key under MEDIA_ROOT).
    [stack] = await Promise.all([
      startStack({ publicUrl, env: { NODE_ENV: 'development', AUDIT_SIGNING_KEY: '', RENDITIONS: '240p,360p', LOG_LEVEL: 'warn' } }),
      makeClip(path.join(workDir, 'clip.mp4'), { seconds: 2, width: 320, height: 180 }),
    ]);
    jwt = await waitFor(() => /^PULSEVAULT_DEV_TOKEN=(\S+)$/m.exec(stack.output())?.[1], 15_000, 'the dev token on the stack output');
    walk = await runToExit('bash', [SCRIPT], { B: stack.url, JWT: jwt, MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url }, process.cwd());
  }, 480_000);

  afterAll(async () => {
    await stack?.stop();
    rmSync(workDir, { recursive: true, force: true });
  });

  it('runs every step of docs/walkthrough.sh to the end, printing no credential', () => {
    expect(walk.stderr + walk.stdout).not.toContain(jwt);
    expect(walk.code, walk.stderr).toBe(0);
    expect(lineOf('upload: ')).toMatch(locations === 'absolute' ? new RegExp(`^upload: ${stack.url}/uploads/[^/]+$`) : /^upload: uploads\/[^/]+$/);
  });

  it('uploads in two PATCHes, resuming at the offset HEAD reports, and finalize hashes what was sent', () => {
    expect(printed().match(/^PATCH 204$/gm)).toHaveLength(2);
    const [, stored, size] = /^server has (\d+) of (\d+) bytes$/m.exec(printed())!;
    expect(Number(stored)).toBe(100_000);
    // sha256sum of the local file prints the hex finalize answered.
    const checksum = /^sha256:([0-9a-f]{64})$/m.exec(printed())![1];
    expect(printed()).toMatch(new RegExp(`^${checksum}  \\S+\\.mp4$`, 'm'));
    expect(JSON.parse(lineOf('{"videoId"', '"uploaded"')!)).toMatchObject({ size: Number(size), transcoding: 'queued', original: 'original.mp4' });
  });

  it('reads the original and watches the status to transcoded; progress only while transcoding (docs/transcoding.md)', () => {
    expect(printed()).toContain('original.mp4 bytes 0-1023: 206');
    expect(printed()).toMatch(/^status: transcoded$/m);
    const metadata = JSON.parse(lineOf('{"videoId"', '"transcoded"')!) as Record<string, unknown>;
    expect(metadata).toMatchObject({ status: 'transcoded', renditions: ['240p', '360p'] });
    expect(metadata).not.toHaveProperty('progress');
  });

  it('plays HLS and DASH from hls/ with one token per scope; the hls/ token does not open the original', () => {
    expect(printed()).toMatch(/^#EXT.*\.m3u8\?token=v1\./m);
    expect(printed()).toMatch(/^media="[^"]+\.m4s\?token=$/m);
    expect(printed()).toMatch(/^240p\.m3u8\n360p\.m3u8\naudio\.m3u8\n(init_\d+\.m4s\n)+manifest\.mpd\nmaster\.m3u8\nposter\.jpg\n/m);
    expect(JSON.parse(lineOf('{"renditions"')!)).toEqual({ renditions: ['240p', '360p'], status: 'ready', masterPlaylist: 'hls/master.m3u8', dashManifest: 'hls/manifest.mpd' });
    expect(printed()).toMatch(/^\{"error":"out_of_scope".*\} 403$/m);
  });

  it('edits the title with the ETag, deletes the video, and its issued tokens are refused with 410', () => {
    expect(JSON.parse(lineOf('{"videoId"', '"My edited video"')!)).toMatchObject({ metadata: { title: 'My edited video' }, legalHold: null });
    expect(JSON.parse(lineOf('{"videoId"', '"deleted"')!)).toMatchObject({ status: 'deleted', reason: 'duplicate', disposedAt: expect.any(String), original: { checksum: expect.stringMatching(/^sha256:/) } });
    expect(printed()).toMatch(/^\{"error":"video_deleted".*\} 410$/m);
  });

  it("finds the stack's MEDIA_ROOT and development audit key from the CLI, and the chain holds", () => {
    expect(printed()).toContain(`in ${path.join(stack.mediaRoot, 'audit')}: chain intact`);
    expect(JSON.parse(printed().trim().split('\n').at(-1)!)).toMatchObject({ scanned: 1, upToDate: 1, enqueued: 0, errors: 0, dryRun: true });
  });

  it('names each metric with the labels /metrics exports (every metric the walkthrough made)', async () => {
    const exported = new Map<string, Set<string>>();
    for (const [, name, labels] of (await (await fetch(`${stack.url}/metrics`)).text()).matchAll(/^([a-z_:][a-z0-9_:]*)\{([^}]*)\} /gm)) {
      const metric = name!.replace(/_(bucket|sum|count)$/, '');
      const set = exported.get(metric) ?? new Set<string>();
      for (const [, label] of labels!.matchAll(/([a-z_]+)="/g)) set.add(label!);
      exported.set(metric, set);
    }
    const checked = new Set<string>();
    for (const file of documentationFiles()) {
      for (const [, metric, labels] of readFileSync(file, 'utf8').matchAll(/`((?:pulsevault|http)_[a-z0-9_]+)\{([^}`]*)\}/g)) {
        if (!exported.has(metric!)) continue; // not observed in this run: nothing to compare with
        for (const label of labels!.split(',').map((l) => l.split('=')[0]!.trim())) expect(exported.get(metric!), `${file}: ${metric}{${label}}`).toContain(label);
        checked.add(metric!);
      }
    }
    expect([...checked]).toEqual(expect.arrayContaining(['pulsevault_transcodes_total', 'pulsevault_uploads_total', 'http_request_duration_seconds']));
  });

  it("runs the README's taste of the API", async () => {
    const [taste] = bashBlocks('README.md').filter((b) => b.marker === 'run by test/walkthrough.test.ts');
    const run = await runToExit('bash', ['-c', ['set -euo pipefail', ...taste!.lines].join('\n')], { B: stack.url, JWT: jwt }, workDir);
    expect(run.code, run.stderr).toBe(0);
    const { url } = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { url: string };
    const original = await fetch(new URL(url, stack.url));
    expect(original.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await original.arrayBuffer())).digest('hex')).toBe(
      createHash('sha256').update(readFileSync(path.join(workDir, 'clip.mp4'))).digest('hex'),
    );
  });
});
