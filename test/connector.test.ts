/**
 * The queue connector and the transcoder in the real local stack (gateway,
 * supervisor, Redis, ffmpeg), with processes killed mid-job.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditLog } from '../shared/audit/client.js';
import type { MediaStore } from '../shared/video/store.js';
import type { Redis } from '../shared/platform/redis.js';
import { DEAD_LETTER_STREAM, DELAYED_SET, TRANSCODE_STREAM, activeKey, queueStats } from '../shared/transcode/queue.js';
import { enqueueTranscode, retryDelayMs } from '../shared/transcode/job.js';
import { expectValidLadder } from './helpers/ladder.js';
import { makeClip } from './helpers/media.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { stackClients, type StackClients } from './helpers/stack-clients.js';
import { waitFor } from './helpers/wait.js';
import { childPids } from './helpers/processes.js';
import { addVideo } from './helpers/videos.js';

const MAX_ATTEMPTS = 4;
let stack: TestStack;
let redis: Redis;
let store: MediaStore;
let enqueue: (videoId: string) => Promise<unknown>;
let clip: string;
let audit: AuditLog;
let transcodeEntries: StackClients['transcodeEntries'];
let untilStatus: StackClients['untilStatus'];


/** Any process (an orphaned ffmpeg) whose command line names this video. */
function processesOf(videoId: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(videoId);
      } catch {
        return false;
      }
    })
    .map(Number);
}

const statusOf = async (videoId: string) => (await store.read(videoId)).status;
const untilWorkDir = (videoId: string) =>
  waitFor(() => readdirSync(store.dir(videoId)).some((n) => n.startsWith('.transcode-')), 60_000, 'the transcode to be running', 50);

beforeAll(async () => {
  stack = await startStack({
    env: {
      RENDITIONS: '240p,360p,720p',
      // Slow enough (≈10 s for 6 s of 720p) to kill processes mid-job on a 2-core machine.
      FFMPEG_PRESET: 'veryfast',
      FFMPEG_THREADS: '1',
      TRANSCODE_LEASE_SECONDS: '5',
      TRANSCODE_RETRY_BASE_SECONDS: '1',
      TRANSCODE_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    },
  });
  ({ redis, store, audit, transcodeEntries, untilStatus } = stackClients(stack));
  enqueue = (videoId) => enqueueTranscode(redis, videoId, null, { store, audit });
  clip = await makeClip(path.join(stack.mediaRoot, 'clip.mp4'), { seconds: 6, width: 1280, height: 720 });
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  await audit?.close();
  await stack?.stop();
});

describe('queue connector + transcoder (local stack)', () => {
  it('transcodes a queued video once, even when the connector is killed mid-dispatch', async () => {
    const video = await addVideo(store, clip);
    await enqueue(video.videoId);
    // The connector may already have handed it to the transcoder.
    expect(['queued', 'transcoding']).toContain(await statusOf(video.videoId));
    await untilWorkDir(video.videoId);
    const [connector] = childPids(stack.process.pid!, 'queue-connector/main.js');
    expect(connector).toBeTypeOf('number');
    process.kill(connector!, 'SIGKILL');

    await untilStatus(video.videoId, 'transcoded');
    // The restarted connector takes the job over after the lease, finds it done (or waits), and acks it.
    await waitFor(async () => (await queueStats(redis)).inFlight === 0 && (await redis.xlen(TRANSCODE_STREAM)) === 0, 60_000, 'the job to be acked');
    expect(childPids(stack.process.pid!, 'queue-connector/main.js')).not.toContain(connector);
    const actions = transcodeEntries(video.videoId).map((e) => e.action);
    expect(actions.filter((a) => a === 'transcode.start')).toHaveLength(1);
    expect(actions.filter((a) => a === 'transcode.complete')).toHaveLength(1);
    expect(actions).not.toContain('transcode.retry');
    expectValidLadder(store.dir(video.videoId), { sourceDuration: video.duration!, hasAudio: true });
    expect(await redis.exists(activeKey(video.videoId))).toBe(0);
  });

  it('finishes a job after its transcoder is killed mid-encode: valid ladder, no leftovers, no orphan ffmpeg', async () => {
    const video = await addVideo(store, clip);
    await enqueue(video.videoId);
    await untilWorkDir(video.videoId);
    const health = (await (await fetch(`${stack.url}/`)).json()) as { functions: { transcoder: { replicas: { pid: number | null }[] } } };
    const pid = health.functions.transcoder.replicas[0]!.pid!;
    process.kill(pid, 'SIGKILL');

    await untilStatus(video.videoId, 'transcoded');
    const meta = await store.read(video.videoId);
    expect(meta.renditions).toEqual(['240p', '360p', '720p']);
    expectValidLadder(store.dir(video.videoId), { sourceDuration: video.duration!, hasAudio: true });
    // The entry follows the publish (status transcoded) and the audit append: wait for it rather than race it.
    const entries = await waitFor(() => {
      const all = transcodeEntries(video.videoId);
      return all.some((e) => e.action === 'transcode.complete') ? all : undefined;
    }, 30_000, 'the transcode.complete entry');
    expect(entries.filter((e) => e.action === 'transcode.retry').length).toBeGreaterThanOrEqual(1);
    expect(entries.filter((e) => e.action === 'transcode.complete')).toHaveLength(1);
    await waitFor(() => processesOf(video.videoId).length === 0, 10_000, 'no process working on the video');
  });

  it('dead-letters a corrupt original after TRANSCODE_MAX_ATTEMPTS, marks it failed, and stops there', async () => {
    const video = await addVideo(store, clip);
    writeFileSync(path.join(store.dir(video.videoId), 'original.mp4'), 'this is not a video');
    const deadBefore = await redis.xlen(DEAD_LETTER_STREAM);
    await enqueue(video.videoId);

    await untilStatus(video.videoId, 'failed');
    const meta = await store.read(video.videoId);
    expect(meta.failureReason).toBe('unreadable_original (HTTP 422, attempt 4 of 4)');
    const dead = await redis.xrange(DEAD_LETTER_STREAM, '-', '+');
    expect(dead).toHaveLength(deadBefore + 1);
    expect(JSON.parse(dead.at(-1)![1][1]!)).toMatchObject({ videoId: video.videoId, attempt: MAX_ATTEMPTS, reason: 'unreadable_original' });

    const entries = transcodeEntries(video.videoId);
    const starts = entries.filter((e) => e.action === 'transcode.start');
    expect(starts).toHaveLength(MAX_ATTEMPTS);
    expect(entries.filter((e) => e.action === 'transcode.retry')).toHaveLength(MAX_ATTEMPTS - 1);
    expect(entries.filter((e) => e.action === 'transcode.failed')).toEqual([expect.objectContaining({ outcome: 'failure', reason: 'unreadable_original' })]);
    // Backed off, not hammered: each retry waited at least half its back-off ceiling.
    for (let i = 1; i < starts.length; i++) {
      const gap = Date.parse(String(starts[i]!.occurredAt)) - Date.parse(String(starts[i - 1]!.occurredAt));
      expect(gap).toBeGreaterThanOrEqual(retryDelayMs(1, i, 0));
    }
    // Nothing is left to retry it.
    expect(await redis.zcard(DELAYED_SET)).toBe(0);
    expect(await redis.exists(activeKey(video.videoId))).toBe(0);
    const stats = await queueStats(redis);
    expect(stats).toMatchObject({ waiting: 0, deadLettered: deadBefore + 1 });
  });

  it('reports the queue in /metrics', async () => {
    const text = await (await fetch(`${stack.url}/metrics`)).text();
    for (const name of ['pulsevault_queue_length', 'pulsevault_queue_in_flight', 'pulsevault_queue_oldest_job_age_seconds', 'pulsevault_queue_dead_letter_length']) {
      expect(text).toMatch(new RegExp(`^${name}\\{[^}]*\\} \\d`, 'm'));
    }
    expect(text).toMatch(/^pulsevault_queue_dead_letter_length\{[^}]*\} [1-9]/m);
    expect(text).toMatch(/^pulsevault_transcodes_total\{[^}]*status="success"[^}]*\} [1-9]/m);
    expect(text).toMatch(/^pulsevault_transcode_duration_seconds_count\{[^}]*ladder="720p"/m);

    // The connector serves its own metrics on QUEUE_CONNECTOR_METRICS_PORT (a Deployment has no
    // gateway in front); the local stack gives it one and folds it into the aggregate.
    const own = text.split('\n').filter((l) => l.includes('replica="queue-connector-0"')).join('\n');
    expect(own).toMatch(/^pulsevault_queue_jobs_total\{[^}]*outcome="dead_lettered"[^}]*\} 1$/m);
    expect(own).toMatch(/^pulsevault_queue_jobs_total\{[^}]*outcome="acked"[^}]*\} [1-9]/m);
    expect(own).toMatch(/^pulsevault_queue_dead_letter_length\{[^}]*\} 1$/m);
  });
});
