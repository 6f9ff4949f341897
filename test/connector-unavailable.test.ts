/**
 * The queue connector process against a gateway that cannot take the job yet:
 * a 503 (no ready replica) or no gateway at all spends no attempt, a 502 (what
 * a transcoder the job crashed looks like) does. Real Redis, a real audit
 * writer, the compiled connector; the gateway is a small HTTP server whose
 * answers the test scripts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../services/devstack/supervisor.js';
import { createAuditLog, type AuditLog } from '../shared/audit/client.js';
import { loadConfig } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { MediaStore } from '../shared/video/store.js';
import type { Redis } from '../shared/platform/redis.js';
import { queueStats, TRANSCODE_STREAM } from '../shared/transcode/queue.js';
import { enqueueTranscode } from '../shared/transcode/job.js';
import { readAuditEntries, startAuditWriter } from './helpers/audit.js';
import { baseTestEnv, spawnNode, type NodeProcess } from './helpers/node-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_HMAC_SECRET } from './helpers/stack.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';

const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-connector-'));
const auditDir = path.join(mediaRoot, 'audit');
let redis: TestRedis;
let client: Redis;
let writer: { stop(): Promise<void> };
let store: MediaStore;
let audit: AuditLog;
const running: (NodeProcess | Server)[] = [];

beforeAll(async () => {
  redis = await startRedis();
  client = redis.client();
  writer = await startAuditWriter(redis.url, auditDir);
  const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: mediaRoot, REDIS_URL: redis.url }, { secretsDir: path.join(mediaRoot, 'none') });
  store = new MediaStore(config.videoDir, client);
  audit = createAuditLog(config, client, createLogger('test', 'error'));
});
afterEach(async () => {
  for (const r of running.splice(0)) {
    if ('child' in r) {
      r.child.kill('SIGTERM');
      await r.exited;
    } else {
      r.closeAllConnections();
      await new Promise((resolve) => r.close(resolve));
    }
  }
});
afterAll(async () => {
  await audit?.close();
  await writer?.stop();
  await redis?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

interface Gateway {
  /** The `attempt` of every job the transcoder was invoked with, in order. */
  attempts: number[];
}

/** A gateway listing one `transcode` subscriber, answering invocations with `answers` in turn, then 200. */
async function startGateway(port: number, answers: { status: number; error: string }[]): Promise<Gateway> {
  const gateway: Gateway = { attempts: [] };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/system/functions') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return void res.end(JSON.stringify([{ name: 'transcoder', annotations: { topic: 'transcode' } }]));
      }
      if (req.method === 'POST' && req.url === '/function/transcoder') {
        gateway.attempts.push((JSON.parse(body) as { attempt: number }).attempt);
        const answer = answers.shift() ?? { status: 200, error: '' };
        res.writeHead(answer.status, { 'Content-Type': 'application/json' });
        return void res.end(JSON.stringify(answer.status === 200 ? { status: 'transcoded' } : { error: answer.error, message: 'scripted' }));
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  running.push(server);
  return gateway;
}

function startConnector(gatewayPort: number): NodeProcess {
  const connector = spawnNode(['dist/services/queue-connector/main.js'], {
    ...baseTestEnv(),
    REDIS_URL: redis.url,
    MEDIA_ROOT: mediaRoot,
    GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    STACK_FILE: path.resolve('stack.yml'), // the subscribers while no gateway answers
    TRANSCODE_RETRY_BASE_SECONDS: '1',
    TRANSCODE_MAX_ATTEMPTS: '3',
  });
  running.push(connector);
  return connector;
}

async function queuedVideo(): Promise<string> {
  const { videoId } = await addVideo(store, null);
  await enqueueTranscode(client, videoId, null, { store, audit });
  return videoId;
}

const acked = () => waitFor(async () => (await queueStats(client)).inFlight === 0 && (await client.xlen(TRANSCODE_STREAM)) === 0, 30_000, 'the job to be acked');
const retriesAudited = (videoId: string) => readAuditEntries(auditDir).filter((e) => e.videoId === videoId && e.action === 'transcode.retry');

describe('queue connector when no transcoder can take the job', () => {
  it('spends no attempt while the gateway is down or answers 503, and delivers the job once it can', async () => {
    const port = await freePort();
    const videoId = await queuedVideo();
    const connector = startConnector(port);
    // No gateway on the port yet: connections are refused.
    await waitFor(() => connector.output().includes('"code":"gateway_unreachable"'), 20_000, 'the connector to find no gateway');
    const gateway = await startGateway(port, [
      { status: 503, error: 'function_unavailable' },
      { status: 503, error: 'function_unavailable' },
    ]);
    await waitFor(() => gateway.attempts.length === 3, 30_000, 'two 503s and a success');
    await acked();
    expect(gateway.attempts).toEqual([1, 1, 1]);
    expect(retriesAudited(videoId)).toEqual([]);
    expect((await store.read(videoId)).status).not.toBe('failed');
  });

  it('counts a 502 (a transcoder that died on the job) as a failed attempt, audited, and retries it', async () => {
    const port = await freePort();
    const gateway = await startGateway(port, [{ status: 502, error: 'bad_gateway' }]);
    const videoId = await queuedVideo();
    startConnector(port);
    await waitFor(() => gateway.attempts.length === 2, 30_000, 'the failure and the retry');
    await acked();
    expect(gateway.attempts).toEqual([1, 2]);
    await waitFor(() => retriesAudited(videoId).length === 1, 10_000, 'the retry in the audit log');
    expect(retriesAudited(videoId)[0]).toMatchObject({ outcome: 'failure', reason: 'bad_gateway' });
  });
});
