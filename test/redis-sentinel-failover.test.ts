/**
 * The primary of a real Sentinel setup (test/helpers/sentinel.ts: 1 primary, 2 replicas, 3
 * redis-sentinel) is SIGKILLed while the real local stack is under load: tus uploads and
 * finalizes, sign + segments through the media edge, 64 audit clients, transcodes, and a second
 * (standby) audit writer. No PulseVault process is restarted. Every request answers within its
 * deadline with success or 503, and succeeds again after the failover; nothing acknowledged is
 * lost (every acknowledged audit entry is in a chain that verifies; every finalized video ends
 * transcoded with its bytes intact). The time from the kill to the first successful sign and
 * segment is printed (docs/deploy.md quotes it; not an assertion).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAuditLog, type AuditLog } from '../shared/audit/client.js';
import { verifyAuditLog } from '../shared/audit/verify.js';
import { loadConfig } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { createRedis, type Redis } from '../shared/platform/redis.js';
import { MediaStore } from '../shared/video/store.js';
import { activeKey } from '../shared/transcode/queue.js';
import { RECOVERY_AUDIT_REASON } from '../shared/transcode/recovery.js';
import { readAuditEntries } from './helpers/audit.js';
import { childPids } from './helpers/processes.js';
import { makeClip } from './helpers/media.js';
import { baseTestEnv, spawnNode, type NodeProcess } from './helpers/node-process.js';
import { startSentinels, type TestSentinels } from './helpers/sentinel.js';
import { startStack, TEST_AUDIT_KEY, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { sha256, tusUpload, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';

/** A request makes a few Redis commands in turn, each bounded by REDIS_COMMAND_TIMEOUT_MS (1 s here); 10× margin on a busy machine. */
const DEADLINE_MS = 10_000;
const AUDIT_CLIENTS = 64;
const UPLOADERS = 3;

let sentinels: TestSentinels;
let stack: TestStack;
let standby: NodeProcess;
let redis: Redis;
let audit: AuditLog;
let clip: Buffer;
let longClip: Buffer;
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-failover-'));

beforeAll(async () => {
  sentinels = await startSentinels();
  [stack, clip] = await Promise.all([
    startStack({
      redis: sentinels.nodes[0]!,
      env: { ...sentinels.env, RENDITIONS: '240p', FFMPEG_PRESET: 'ultrafast', TRANSCODE_LEASE_SECONDS: '5', TRANSCODE_RETRY_BASE_SECONDS: '1', REDIS_COMMAND_TIMEOUT_MS: '1000' },
    }),
    makeClip(path.join(tmp, 'clip.mp4'), { seconds: 1 }).then((f) => readFileSync(f)),
  ]);
  // Long enough that its transcode is still running when the failover is over.
  longClip = readFileSync(await makeClip(path.join(tmp, 'long.mp4'), { seconds: 30 }));
  // A second audit writer on the same files, standing by for the lease: the failover must never let both append.
  standby = spawnNode(['dist/services/audit-writer/main.js'], { ...baseTestEnv(), ...sentinels.env, MEDIA_ROOT: stack.mediaRoot, LOG_LEVEL: 'info' });
  const config = loadConfig({ ...sentinels.env, HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: stack.mediaRoot, REDIS_COMMAND_TIMEOUT_MS: '1000' }, { secretsDir: '/nonexistent' });
  redis = createRedis(config, { name: 'failover-test' });
  audit = createAuditLog(config, redis, createLogger('failover-test', 'error'));
}, 180_000);

afterAll(async () => {
  await audit?.close();
  redis?.disconnect();
  if (standby && standby.child.exitCode === null) standby.child.kill('SIGTERM');
  await standby?.exited;
  await stack?.stop();
  await sentinels?.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface Answer {
  what: string;
  status: number | 'no answer' | 'wrong bytes';
  ms: number;
  at: number;
}

/** One request bounded by the deadline: its status, or 'no answer' when it hung past it. */
async function timed(what: string, call: (signal: AbortSignal) => Promise<Response>, answers: Answer[], check?: (res: Response) => Promise<boolean>): Promise<Response | null> {
  const started = Date.now();
  try {
    const res = await call(AbortSignal.timeout(DEADLINE_MS));
    const right = res.status !== 200 || !check || (await check(res));
    answers.push({ what, status: right ? res.status : 'wrong bytes', ms: Date.now() - started, at: Date.now() });
    return res;
  } catch {
    answers.push({ what, status: 'no answer', ms: Date.now() - started, at: Date.now() });
    return null;
  }
}

async function uploadAndFinalize(answers: Answer[], data = clip): Promise<{ videoId: string }> {
  const url = await tusUpload(`${stack.url}/uploads`, data, {
    retryDelays: Array.from({ length: 60 }, () => 250),
    onAfterResponse: (_req, res) => void answers.push({ what: 'tus', status: res.getStatus(), ms: 0, at: Date.now() }),
  });
  const res = await waitFor(
    () =>
      timed('finalize', (signal) =>
        fetch(`${stack.url}/uploads/finalize`, { method: 'POST', signal, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ uploadId: uploadIdOf(url), filename: 'visit.mp4', userId: 'clinician-7', metadata: {} }) }),
      answers).then(async (r) => {
        if (r?.status !== 200) throw new Error(`finalize answered ${r?.status ?? 'nothing'}: ${await r?.text().catch(() => '')}`); // waitFor reports the last one
        return r;
      }),
    60_000,
    'finalize to succeed',
    250,
  );
  return (await res.json()) as { videoId: string };
}

it('a SIGKILLed primary: 503s or success only, recovery without restarts, nothing acknowledged lost, one writer at a time', async () => {
  const store = new MediaStore(path.join(stack.mediaRoot, 'videos'));
  const answers: Answer[] = [];
  // A transcoded video to sign and stream throughout.
  const { videoId: played } = await uploadAndFinalize(answers);
  await waitFor(async () => (await store.read(played)).status === 'transcoded', 90_000, 'the first video to be transcoded', 200);
  const segmentFile = readdirSync(path.join(store.dir(played), 'hls')).find((f) => f.endsWith('.m4s'))!;
  const segmentBytes = readFileSync(path.join(store.dir(played), 'hls', segmentFile));

  let loading = true;
  const acknowledged: string[] = [];
  const refused: unknown[] = [];
  const finalized: string[] = [];
  const signAndStream = async () => {
    while (loading) {
      const signed = await timed('sign', (signal) =>
        fetch(`${stack.url}/media/sign`, { method: 'POST', signal, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ videoId: played, path: `hls/${segmentFile}` }) }),
      answers);
      if (signed?.status === 200) {
        const { url } = (await signed.json()) as { url: string };
        await timed('segment', (signal) => fetch(`${stack.url}${url}`, { signal }), answers, async (res) => Buffer.from(await res.arrayBuffer()).equals(segmentBytes));
      }
      await new Promise((r) => setTimeout(r, 50)); // pacing between a client's requests, not a wait for a condition
    }
  };
  const auditClient = async () => {
    while (loading) {
      const requestId = randomUUID();
      try {
        await audit.record({ category: 'access', action: 'stream', outcome: 'granted', actor: { userId: 'clinician-7', role: null }, videoId: played, clientIp: '127.0.0.1', requestId });
        acknowledged.push(requestId);
      } catch (err) {
        refused.push(err);
        // A client backs off after a refusal (a refusal can be instant: without it 64 loops would starve the event loop).
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  // A client whose upload gave up (tus's retries, or finalize's minute, spent during the outage) starts a new one.
  const uploadFailures: string[] = [];
  const uploader = async () => {
    while (loading) {
      try {
        finalized.push((await uploadAndFinalize(answers)).videoId);
      } catch (err) {
        uploadFailures.push(String(err));
      }
    }
  };
  const load = [
    ...Array.from({ length: 2 }, signAndStream),
    ...Array.from({ length: AUDIT_CLIENTS }, auditClient),
    ...Array.from({ length: UPLOADERS }, uploader),
  ];

  const succeededSince = (what: string, since: number) => answers.some((a) => a.what === what && a.status === 200 && a.at > since);
  // What the clients saw since `since`, for a failure message (the stack's warnings alone do not say which client stalled).
  const seenSince = (since: number) => {
    const statuses = (what: string) => answers.filter((a) => a.what === what && a.at > since).map((a) => a.status).join(',') || 'none';
    return `audit: ${acknowledged.length} acknowledged, ${refused.length} refused in all; since: finalize ${statuses('finalize')}; tus ${statuses('tus').slice(-200)}; upload failures: ${uploadFailures.length} (${uploadFailures.slice(-2).join(' | ')})`;
  };
  const explained = <T>(since: number, wait: Promise<T>) => wait.catch((err: Error) => Promise.reject(new Error(`${err.message}; ${seenSince(since)}`)));
  let killedPort = 0;
  let killedAt = 0;
  // Recovery: the first success after the first refusal (a request in flight at the kill can still succeed just after it).
  const firstAt = (what: string) => {
    const refusedAt = answers.find((a) => a.what === what && a.status !== 200 && a.at > killedAt)?.at ?? killedAt;
    const ok = answers.find((a) => a.what === what && a.status === 200 && a.at > refusedAt);
    return ok ? `${ok.at - killedAt} ms` : 'none yet';
  };
  try {
    await waitFor(() => succeededSince('segment', 0) && acknowledged.length > AUDIT_CLIENTS && finalized.length > 0, 60_000, 'the load to be running', 100);
    killedPort = await sentinels.killPrimary();
    killedAt = Date.now();
    const acknowledgedBefore = acknowledged.length;

    await explained(killedAt, waitFor(() => succeededSince('sign', killedAt) && succeededSince('segment', killedAt) && succeededSince('finalize', killedAt), 60_000, 'sign, segments and finalize to work again', 100));
    const recoveredAt = Date.now();
    // Keep the load on a little after the recovery, so each kind of client is seen working again.
    await explained(recoveredAt, waitFor(() => acknowledged.length > acknowledgedBefore + AUDIT_CLIENTS && answers.filter((a) => a.what === 'finalize' && a.status === 200 && a.at > recoveredAt).length >= 1, 60_000, 'audit and finalize to carry on', 100));
  } finally {
    // Also when a wait above failed: a load left running would starve the next test.
    loading = false;
    await Promise.allSettled(load);
  }
  console.log(
    `redis-sentinel-failover: primary :${killedPort} killed; first success after a refusal: sign ${firstAt('sign')}, segment ${firstAt('segment')}, finalize ${firstAt('finalize')} after the kill; ` +
      `${answers.length} answers (${answers.filter((a) => a.status === 503).length} × 503), ${acknowledged.length} audit entries acknowledged, ${refused.length} refused, ${finalized.length} videos finalized, ${uploadFailures.length} uploads given up and started again`,
  );
  expect(await sentinels.primaryPort()).not.toBe(killedPort);

  // Never a wrong answer, never a hang past the deadline: 503 or success.
  const allowed: Record<string, unknown[]> = { sign: [200, 503], segment: [200, 503], finalize: [200, 503], tus: [200, 201, 204, 409, 423, 503] };
  const wrong = answers.filter((a) => !allowed[a.what]!.includes(a.status) || a.ms > DEADLINE_MS);
  expect(wrong).toEqual([]);
  for (const err of refused) expect((err as Error).name, String(err)).toBe('AuditUnavailableError');

  // Every finalized video ends transcoded, its original the very bytes uploaded (tus resumed from the offset on disk).
  for (const videoId of [played, ...finalized]) {
    await waitFor(async () => (await store.read(videoId)).status === 'transcoded', 90_000, `video ${videoId} to be transcoded`, 200);
    const meta = await store.read(videoId);
    expect(meta.checksum).toBe(sha256(clip));
    expect(sha256(readFileSync(path.join(store.dir(videoId), meta.original)))).toBe(sha256(clip));
  }

  // Every acknowledged audit entry is in the chain, once, and the chain verifies: no two writers appended at once.
  const auditDir = path.join(stack.mediaRoot, 'audit');
  await waitFor(async () => (await verifyAuditLog(auditDir, TEST_AUDIT_KEY)).breaks.length === 0, 30_000, 'the audit chain to verify (checkpoints written)', 500);
  const recorded = new Map<string, number>();
  for (const e of readAuditEntries(auditDir)) if (typeof e.requestId === 'string') recorded.set(e.requestId, (recorded.get(e.requestId) ?? 0) + 1);
  expect(acknowledged.filter((id) => recorded.get(id) !== 1)).toEqual([]);
  // The writer lease's generations (fences) each writer logged: a holding the failover kept is confirmed under its own
  // generation again; a new holding gets a larger one. No generation may appear in both writers.
  const generations = (output: string) => new Set([...output.matchAll(/"generation":(\d+)[^\n]*audit writer lease acquired/g)].map((m) => Number(m[1])));
  const [first, second] = [generations(stack.output()), generations(standby.output())];
  console.log(`redis-sentinel-failover: audit writer lease generations: stack's writer ${[...first].join(', ')}; standby ${[...second].join(', ') || 'none'}`);
  expect(first.size + second.size).toBeGreaterThan(0);
  expect([...first].filter((g) => second.has(g))).toEqual([]);
  expect(standby.child.exitCode).toBeNull();
}, 300_000);

it('a job only the killed primary had (asynchronous replication lost it) is re-created from meta.json after the failover', async () => {
  await sentinels.restartKilled();
  const primary = sentinels.node(await sentinels.primaryPort());
  const replicas = sentinels.nodes.filter((n) => n !== primary);
  const direct = primary.client();
  // The worst case min-replicas-max-lag allows: the replicas stopped hearing from the primary, which still acknowledges writes.
  // The connector paused too: a job it picked up before the kill would be transcoded from the old primary's
  // queue and prove nothing about the recovery (it dispatches within ~30 ms of finalize).
  const [connector] = childPids(stack.process.pid!, 'queue-connector/main.js');
  expect(connector).toBeDefined();
  process.kill(connector!, 'SIGSTOP');
  for (const r of replicas) r.signal('SIGSTOP');
  let videoId: string;
  try {
    await direct.config('SET', 'min-replicas-to-write', '0');
    await direct.client('KILL', 'TYPE', 'replica');
    ({ videoId } = await uploadAndFinalize([], longClip));
    expect(await direct.exists(activeKey(videoId))).toBe(1); // acknowledged: finalize answered 200 with the job queued
    await sentinels.killPrimary();
  } finally {
    for (const r of replicas) r.signal('SIGCONT');
  }
  try {
    await waitFor(async () => (await sentinels.primaryPort()) !== primary.port, 60_000, 'a replica to be promoted', 200);
  } finally {
    process.kill(connector!, 'SIGCONT');
  }

  // The promoted replica never had the job; the connector sees a new primary and re-creates it from meta.json.
  const store = new MediaStore(path.join(stack.mediaRoot, 'videos'));
  await waitFor(async () => (await store.read(videoId)).status === 'transcoded', 120_000, 'the video whose job was lost to be transcoded', 200);
  const requeued = readAuditEntries(path.join(stack.mediaRoot, 'audit')).filter((e) => e.action === 'transcode.requeued' && e.videoId === videoId);
  // At least once: a pass cut short right after the failover (the new primary refusing writes until a replica
  // is in sync, min-replicas-to-write) audits its attempt and runs again.
  expect(requeued.length).toBeGreaterThanOrEqual(1);
  for (const e of requeued) expect(e.reason).toBe(RECOVERY_AUDIT_REASON);
});
