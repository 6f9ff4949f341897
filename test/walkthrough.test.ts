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
import { bashBlocks } from './helpers/markdown.js';
import { makeClip } from './helpers/media.js';
import { runToExit } from './helpers/node-process.js';
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

describe('the walkthrough against the local stack', () => {
  let stack: TestStack;
  let jwt: string;
  let workDir: string;

  beforeAll(async () => {
    workDir = mkdtempSync(path.join(tmpdir(), 'pv-walkthrough-'));
    // As `npm start` on a developer's machine: no auth configured (dev token), no AUDIT_SIGNING_KEY (dev key under MEDIA_ROOT).
    [stack] = await Promise.all([
      startStack({ env: { NODE_ENV: 'development', AUDIT_SIGNING_KEY: '', RENDITIONS: '240p,360p', LOG_LEVEL: 'warn' } }),
      makeClip(path.join(workDir, 'clip.mp4'), { seconds: 2, width: 320, height: 180 }),
    ]);
    jwt = await waitFor(() => /^PULSEVAULT_DEV_TOKEN=(\S+)$/m.exec(stack.output())?.[1], 15_000, 'the dev token on the stack output');
  }, 180_000);

  afterAll(async () => {
    await stack?.stop();
    rmSync(workDir, { recursive: true, force: true });
  });

  it('runs every step of docs/walkthrough.sh to the end', async () => {
    const run = await runToExit('bash', [SCRIPT], { B: stack.url, JWT: jwt, MEDIA_ROOT: stack.mediaRoot, REDIS_URL: stack.redis.url }, process.cwd());
    expect(run.stderr + run.stdout).not.toContain(jwt);
    expect(run.code, run.stderr).toBe(0);
    const out = run.stdout;

    expect(out.match(/^PATCH 204$/gm)).toHaveLength(2);
    const [, stored, size] = /^server has (\d+) of (\d+) bytes$/m.exec(out)!;
    expect(Number(stored)).toBe(100_000);
    // Finalize's checksum is the hash of the bytes sent in two PATCHes (sha256sum prints the same hex).
    const checksum = /^sha256:([0-9a-f]{64})$/m.exec(out)![1];
    expect(out).toMatch(new RegExp(`^${checksum}  \\S+\\.mp4$`, 'm'));
    expect(JSON.parse(out.split('\n').find((l) => l.startsWith('{"videoId"') && l.includes('"uploaded"'))!)).toMatchObject({ size: Number(size), transcoding: 'queued', original: 'original.mp4' });

    expect(out).toContain('original.mp4 bytes 0-1023: 206');
    expect(out).toMatch(/^status: transcoded$/m);
    // docs/transcoding.md: `progress` is shown only while transcoding.
    const metadata = JSON.parse(out.split('\n').find((l) => l.startsWith('{"videoId"') && l.includes('"transcoded"'))!) as Record<string, unknown>;
    expect(metadata).toMatchObject({ status: 'transcoded', renditions: ['240p', '360p'] });
    expect(metadata).not.toHaveProperty('progress');

    expect(out).toMatch(/^#EXT.*\.m3u8\?token=v1\./m);
    expect(out).toMatch(/^media="[^"]+\.m4s\?token=$/m);
    expect(out).toMatch(/^240p\.m3u8\n360p\.m3u8\naudio\.m3u8\n(init_\d+\.m4s\n)+manifest\.mpd\nmaster\.m3u8\nposter\.jpg\n/m);
    expect(JSON.parse(out.split('\n').find((l) => l.startsWith('{"renditions"'))!)).toEqual({
      renditions: ['240p', '360p'],
      status: 'ready',
      masterPlaylist: 'hls/master.m3u8',
      dashManifest: 'hls/manifest.mpd',
    });
    expect(out).toMatch(/^\{"error":"out_of_scope".*\} 403$/m);

    // The CLI found the stack's MEDIA_ROOT and its development audit key by itself.
    expect(out).toContain(`in ${path.join(stack.mediaRoot, 'audit')}: chain intact`);
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toMatchObject({ scanned: 1, upToDate: 1, enqueued: 0, errors: 0, dryRun: true });
  }, 300_000);

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
  }, 120_000);
});
