/**
 * Connector dispatch matches transcoder capacity by construction: two compiled connector
 * processes (each allowed 5 at once) hand out, together, no more jobs than the transcoders have
 * slots (ready replicas from the gateway's listing × max_inflight from stack.yml), and more as replicas become
 * ready. Real Redis, a real audit writer; the gateway is a small HTTP server that lists the
 * transcoder and holds each invocation until the test releases it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../services/devstack/supervisor.js';
import { createAuditLog, type AuditLog } from '../shared/audit/client.js';
import { loadConfig } from '../shared/platform/config.js';
import { createLogger } from '../shared/platform/log.js';
import { MediaStore } from '../shared/video/store.js';
import { queueStats } from '../shared/transcode/queue.js';
import { SubscriberDirectory } from '../shared/transcode/subscribers.js';
import { enqueueTranscode } from '../shared/transcode/job.js';
import { startAuditWriter } from './helpers/audit.js';
import { baseTestEnv, spawnNode, type NodeProcess } from './helpers/node-process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { TEST_HMAC_SECRET } from './helpers/secrets.js';
import { addVideo } from './helpers/videos.js';
import { waitFor } from './helpers/wait.js';
import { STACK_START_DEADLINE_MS } from './helpers/stack.js';

const mediaRoot = mkdtempSync(path.join(tmpdir(), 'pv-capacity-'));
let redis: TestRedis;
let writer: { stop(): Promise<void> };
let audit: AuditLog;
const connectors: NodeProcess[] = [];
let gatewayUrl = '';
const held: ServerResponse[] = [];
let maxHeld = 0;
let readyReplicas = 0;
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/system/functions') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      // As faas-netes lists a function: replicas and ready replicas, no environment (max_inflight comes from stack.yml).
      return void res.end(JSON.stringify([{ name: 'transcoder', annotations: { topic: 'transcode' }, replicas: 5, availableReplicas: readyReplicas }]));
    }
    if (req.method === 'POST' && req.url === '/function/transcoder') {
      held.push(res);
      maxHeld = Math.max(maxHeld, held.length);
      return;
    }
    res.writeHead(404).end();
  });
});

beforeAll(async () => {
  redis = await startRedis();
  writer = await startAuditWriter(redis.url, path.join(mediaRoot, 'audit'));
  const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, MEDIA_ROOT: mediaRoot, REDIS_URL: redis.url }, { secretsDir: path.join(mediaRoot, 'none') });
  const client = redis.client();
  audit = createAuditLog(config, client, createLogger('test', 'error'));
  const store = new MediaStore(config.videoDir, client);
  for (let i = 0; i < 8; i++) await enqueueTranscode(client, (await addVideo(store, null)).videoId, null, { store, audit });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  gatewayUrl = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 2; i++) {
    connectors.push(
      spawnNode(['dist/services/queue-connector/main.js'], { ...baseTestEnv(), REDIS_URL: redis.url, MEDIA_ROOT: mediaRoot, GATEWAY_URL: gatewayUrl, TRANSCODE_CONCURRENCY: '5', STACK_FILE: 'stack.yml' }),
    );
  }
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  for (const c of connectors) c.child.kill('SIGTERM');
  await Promise.all(connectors.map((c) => c.exited));
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await audit?.close();
  await writer?.stop();
  await redis?.close();
  rmSync(mediaRoot, { recursive: true, force: true });
});

/** Keep observing for `ms` (both connectors re-check every second), failing early if the bound is broken. */
async function holdsAt(count: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  await waitFor(() => {
    expect(maxHeld).toBeLessThanOrEqual(count);
    return Date.now() > until && held.length === count;
  }, ms + 10_000, `${count} jobs in flight, never more`);
}

describe('connector dispatch vs transcoder capacity', () => {
  it('a transcoder that becomes ready is seen within seconds, not after the 10 s listing cache', async () => {
    const directory = new SubscriberDirectory(loadConfig({ ...baseTestEnv(), REDIS_URL: redis.url, GATEWAY_URL: gatewayUrl, STACK_FILE: 'stack.yml' }), createLogger('test', 'error'));
    expect(await directory.capacity('transcode')).toBe(0);
    await holdsAt(0, 1_500);
    readyReplicas = 3;
    // Well under the 10 s a listing is otherwise kept: a subscriber with no ready replica is looked up again every second.
    await waitFor(async () => (await directory.capacity('transcode')) === 3, 8_000, 'the ready replicas seen');
    await waitFor(() => held.length === 3, 20_000, 'the three slots filled');
  });

  it('two connectors hand out together only as many jobs as ready replicas × max_inflight, more as replicas become ready', async () => {
    await holdsAt(3, 3_000);
    expect((await queueStats(redis.client())).inFlight).toBe(3);

    readyReplicas = 5; // KEDA added replicas; the listing is re-read within 10 s
    await waitFor(() => held.length === 5, 30_000, 'five slots filled');
    await holdsAt(5, 3_000);

    // Transcodes finish: the remaining jobs go out, never above the slots.
    const finish = () => held.splice(0).forEach((r) => r.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ status: 'transcoded' })));
    finish();
    await waitFor(() => held.length === 3, 20_000, 'the last three handed out');
    expect(maxHeld).toBe(5);
    finish();
    await waitFor(async () => (await queueStats(redis.client())).inFlight === 0 && (await redis.client().xlen('pulsevault:transcode:jobs')) === 0, 20_000, 'every job acked');
  });
});
