/**
 * Signed webhooks (shared/webhooks): the signature verified with the `standardwebhooks` package
 * unmodified (a rotation's two secrets both verify), the outbox written in the same locked step
 * as meta.json with no PHI in it, the allow-list bypass corpus refused at connect time, and the
 * sender against a real redis-server and a real HTTP receiver on loopback: a receiver failing
 * three times then succeeding, a receiver down across a Redis restart that lost its data, the
 * sender process killed -9 mid-delivery and restarted: delivered again with the same webhook-id.
 */
import type { LookupAddress } from 'node:dns';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/platform/log.js';
import { createRedis } from '../shared/platform/redis.js';
import { loadConfig } from '../shared/platform/config.js';
import { markFailed, markQueued } from '../shared/video/state.js';
import { MediaStore, type VideoMeta } from '../shared/video/store.js';
import { addressAllowed, checkEndpointUrl, parseAllowList } from '../shared/webhooks/allow-list.js';
import { Deliverer } from '../shared/webhooks/deliver.js';
import { SecretKek } from '../shared/keys/kek.js';
import { EndpointStore, endpointStoreFromConfig, signingSecrets } from '../shared/webhooks/endpoints.js';
import { outboxDir, webhooksDir, type WebhookEvent } from '../shared/webhooks/events.js';
import { replayDeadLetters, WebhookSender } from '../shared/webhooks/sender.js';
import { signDelivery } from '../shared/webhooks/signing.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { baseTestEnv, spawnNode } from './helpers/node-process.js';
import { waitFor } from './helpers/wait.js';

const log = createLogger('webhooks-test', 'error');
const LOOPBACK = parseAllowList(['127.0.0.1/32']);

interface Hit {
  headers: Record<string, string>;
  body: string;
}

/** A receiver on loopback; `answer` decides each response from the number of hits so far. */
async function receiver(answer: (n: number, res: ServerResponse) => void): Promise<{ url: string; hits: Hit[]; server: Server }> {
  const hits: Hit[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      hits.push({ headers: req.headers as Record<string, string>, body });
      answer(hits.length, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/hooks`, hits, server };
}

function meta(videoId: string): VideoMeta {
  const now = new Date().toISOString();
  return {
    videoId, filename: 'patient-jane-doe.mp4', owner: 'owner-1', status: 'uploaded', uploadedAt: now, updatedAt: now, original: 'original.mp4', size: 1, checksum: 'sha256:00',
    duration: 1, width: 320, height: 240, fps: 25, videoCodec: 'h264', audioCodec: null, bitrate: 1, renditions: [], metadata: { title: 'Jane Doe knee MRI', description: 'PHI' },
  };
}

describe('signing', () => {
  it('a rotation signs with both secrets; each verifies with the standardwebhooks package unmodified', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pv-wh-'));
    try {
      const store = new EndpointStore(root);
      const created = await store.create({ url: 'https://hooks.example.com/in', events: ['video.ready'] }, parseAllowList(['hooks.example.com']), true);
      const old = created.secrets[0]!.secret;
      const rotated = await store.rotate(created.id, 60_000);
      const secrets = signingSecrets(rotated);
      expect(secrets).toHaveLength(2);
      const body = JSON.stringify({ type: 'video.ready', data: { videoId: 'x' } });
      const headers = signDelivery(secrets, 'msg_1', new Date(), body);
      expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
      for (const secret of secrets) expect(new Webhook(secret).verify(body, { ...headers })).toEqual(JSON.parse(body));
      expect(secrets).toContain(old);
      expect(() => new Webhook(secrets[0]!).verify(body.replace('x', 'y'), { ...headers })).toThrow();
      // After the window only the new secret signs.
      expect(signingSecrets(rotated, Date.now() + 120_000)).toEqual([rotated.secrets[0]!.secret]);
      // The endpoint file on disk is the durable record.
      expect(readdirSync(path.join(root, 'endpoints'))).toEqual([`${created.id}.json`]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('endpoint secrets at rest', () => {
  it('with a KEK the file holds only the wrapped secret; it reads back, signs, and fails loudly without the KEK', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pv-wh-'));
    const kek = new SecretKek({ id: 'k1', key: Buffer.alloc(32, 3) });
    try {
      const list = parseAllowList(['hooks.example.com']);
      const wrapped = new EndpointStore(root, kek);
      const created = await wrapped.create({ url: 'https://hooks.example.com/in', events: ['video.ready'] }, list, true);
      const secret = created.secrets[0]!.secret;
      const file = readFileSync(path.join(root, 'endpoints', `${created.id}.json`), 'utf8');
      expect(file).not.toContain(secret.slice('whsec_'.length));
      expect(file).not.toContain(Buffer.from(secret.slice('whsec_'.length), 'base64').toString('hex'));
      expect(JSON.parse(file).secrets).toEqual([{ wrapped: { kekId: 'k1', alg: 'A256GCMKW', wrapped: expect.any(String) }, expiresAt: null }]);
      expect((await wrapped.get(created.id)).secrets[0]!.secret).toBe(secret);
      const body = '{"type":"video.ready"}';
      expect(new Webhook(secret).verify(body, { ...signDelivery(signingSecrets(await wrapped.get(created.id)), 'msg_1', new Date(), body) })).toEqual(JSON.parse(body));
      // Without the KEK, or with another one: an error naming the KEK, never the secret; the listing fails instead of dropping it.
      const clear = new EndpointStore(root);
      await expect(clear.get(created.id)).rejects.toThrow(/MEDIA_KEK .*wrapped under KEK "k1"/);
      await expect(clear.list()).rejects.toThrow(/MEDIA_KEK/);
      // What an admin lists needs no secret, hence no KEK.
      expect(await clear.views()).toEqual([{ id: created.id, url: 'https://hooks.example.com/in', events: ['video.ready'], createdAt: created.createdAt }]);
      const other = new EndpointStore(root, new SecretKek({ id: 'k2', key: Buffer.alloc(32, 4) }));
      const refused = await other.get(created.id).catch((err: Error) => err);
      expect(refused).toBeInstanceOf(Error);
      expect(String((refused as Error).message)).toMatch(/KEK "k1"/);
      expect(String((refused as Error).message)).not.toContain(secret.slice(6));
      // A wrapped secret copied onto another endpoint does not open (bound to the endpoint's id).
      const second = await wrapped.create({ url: 'https://hooks.example.com/other', events: ['video.ready'] }, list, true);
      const secondFile = path.join(root, 'endpoints', `${second.id}.json`);
      writeFileSync(secondFile, JSON.stringify({ ...JSON.parse(readFileSync(secondFile, 'utf8')), secrets: JSON.parse(file).secrets }));
      await expect(wrapped.get(second.id)).rejects.toThrow(/does not open/);

      // A file written before the KEK (in the clear) still reads; its next change (a rotation) is written wrapped.
      const legacy = await clear.create({ url: 'https://hooks.example.com/legacy', events: ['video.ready'] }, list, true);
      expect((await wrapped.get(legacy.id)).secrets[0]!.secret).toBe(legacy.secrets[0]!.secret);
      const rotated = await wrapped.rotate(legacy.id, 60_000);
      const legacyFile = readFileSync(path.join(root, 'endpoints', `${legacy.id}.json`), 'utf8');
      for (const s of rotated.secrets) expect(legacyFile).not.toContain(s.secret.slice(6));
      expect(signingSecrets(await wrapped.get(legacy.id))).toEqual(signingSecrets(rotated));

      // Production without MEDIA_KEK does not start with endpoint secrets in the clear.
      expect(() => endpointStoreFromConfig({ videoDir: path.join(root, 'videos'), mediaKek: null, nodeEnv: 'production' })).toThrow(/MEDIA_KEK is required in production/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('allow-list', () => {
  it('refuses the bypass corpus at registration and at connect time', async () => {
    const rx = await receiver((_, res) => res.writeHead(200).end());
    const port = new URL(rx.url).port;
    const byName = parseAllowList(['localhost', 'hooks.example.com', 'metadata.example']);
    const d = new Deliverer(byName, 2_000, false);
    const headers = signDelivery(['whsec_' + Buffer.alloc(32, 1).toString('base64')], 'msg_x', new Date(), '{}');
    try {
      for (const target of [`http://127.0.0.1:${port}/`, `http://2130706433:${port}/`, `http://0x7f.1:${port}/`, `http://[::ffff:127.0.0.1]:${port}/`, `http://[::1]:${port}/`, `http://localhost:${port}/`, 'http://169.254.169.254/latest/meta-data/']) {
        const outcome = await d.attempt(target, headers, '{}');
        expect(outcome.ok, target).toBe(false);
      }
      // A listed name that resolves to the metadata service or loopback is refused (connect-time rule).
      expect(addressAllowed(byName, 'metadata.example', '169.254.169.254')).toBe(false);
      expect(addressAllowed(byName, 'hooks.example.com', '::ffff:127.0.0.1')).toBe(false);
      expect(addressAllowed(byName, 'hooks.example.com', '93.184.216.34')).toBe(true);
      expect(addressAllowed(byName, 'evil.example.org', '93.184.216.34')).toBe(false);
      expect(rx.hits).toHaveLength(0);
      expect(() => checkEndpointUrl(byName, 'https://evil.example.org/', true)).toThrow(/not in WEBHOOK_ALLOWED_HOSTS/);
      expect(() => checkEndpointUrl(byName, 'http://hooks.example.com/', true)).toThrow(/https is required/);
      expect(() => checkEndpointUrl(parseAllowList(['hooks.example.com'], ['hooks.example.com']), 'http://hooks.example.com/', true)).not.toThrow();
      expect(() => checkEndpointUrl(byName, `http://2130706433:${port}/`, false)).toThrow(/not in WEBHOOK_ALLOWED_HOSTS/);

      // A redirect is never followed: the attempt fails and the redirect's target hears nothing.
      const target = await receiver((_, res) => res.writeHead(200).end());
      const redirecting = await receiver((_, res) => res.writeHead(302, { location: target.url }).end());
      const loop = new Deliverer(LOOPBACK, 2_000, false);
      expect(await loop.attempt(redirecting.url, headers, '{}')).toMatchObject({ ok: false, status: 302 });
      expect(target.hits).toHaveLength(0);
      loop.close();
      target.server.close();
      redirecting.server.close();
    } finally {
      d.close();
      rx.server.close();
    }
  });
});

describe('allow-list: DNS answers judged at connect time (the resolver played by the test)', () => {
  it('refuses names resolving to loopback, the metadata service or IPv4-mapped loopback, and a name whose second answer differs from its first', async () => {
    // Every connection the receiver answers is closed after it, so each attempt connects (and resolves) anew.
    const rx = await receiver((_, res) => res.writeHead(204, { connection: 'close' }).end());
    const port = new URL(rx.url).port;
    let rebinds = 0;
    const answers: Record<string, () => LookupAddress[]> = {
      'loopback.example': () => [{ address: '127.0.0.1', family: 4 }],
      'metadata.example': () => [{ address: '169.254.169.254', family: 4 }],
      'mapped.example': () => [{ address: '::ffff:127.0.0.1', family: 6 }],
      // The receiver first (allowed by its CIDR), the metadata service on the next connect.
      'rebind.example': () => [{ address: ++rebinds === 1 ? '127.0.0.1' : '169.254.169.254', family: 4 }],
      'mixed.example': () => [{ address: '169.254.169.254', family: 4 }, { address: '127.0.0.1', family: 4 }],
    };
    const asked: string[] = [];
    const resolve = async (hostname: string): Promise<LookupAddress[]> => {
      asked.push(hostname);
      const answer = answers[hostname];
      if (!answer) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
      return answer();
    };
    const d = new Deliverer(parseAllowList(['loopback.example', 'metadata.example', 'mapped.example']), 2_000, false, resolve);
    const headers = signDelivery(['whsec_' + Buffer.alloc(32, 1).toString('base64')], 'msg_x', new Date(), '{}');
    try {
      for (const name of ['loopback.example', 'metadata.example', 'mapped.example']) {
        expect(await d.attempt(`http://${name}:${port}/hooks`, headers, '{}'), name).toEqual({ ok: false, status: null, reason: `EWEBHOOKREFUSED: ${name} resolves only to addresses outside WEBHOOK_ALLOWED_HOSTS` });
      }
      expect(rx.hits).toHaveLength(0);

      // With the receiver's loopback allow-listed by CIDR: the rebinding name's first answer is delivered to,
      // its second (on a new connection) refused; a mixed answer connects only to the allowed address.
      const byCidr = new Deliverer(parseAllowList(['127.0.0.1/32', 'rebind.example', 'mixed.example']), 2_000, false, resolve);
      expect(await byCidr.attempt(`http://rebind.example:${port}/hooks`, headers, '{}')).toEqual({ ok: true, status: 204 });
      expect(await byCidr.attempt(`http://rebind.example:${port}/hooks`, headers, '{}')).toEqual({ ok: false, status: null, reason: 'EWEBHOOKREFUSED: rebind.example resolves only to addresses outside WEBHOOK_ALLOWED_HOSTS' });
      expect(asked.filter((n) => n === 'rebind.example')).toHaveLength(2);
      expect(rx.hits).toHaveLength(1);
      expect(await byCidr.attempt(`http://mixed.example:${port}/hooks`, headers, '{}')).toEqual({ ok: true, status: 204 });
      expect(rx.hits).toHaveLength(2);
      byCidr.close();
    } finally {
      d.close();
      rx.server.close();
    }
  });
});

describe('outbox and sender (real redis-server, real receiver)', () => {
  let redis: TestRedis;
  let root: string;
  let conn: ReturnType<typeof createRedis>;
  beforeAll(async () => {
    redis = await startRedis();
    root = mkdtempSync(path.join(tmpdir(), 'pv-wh-'));
    conn = createRedis(loadConfig({ HMAC_SECRET: 'x'.repeat(32), REDIS_URL: redis.url }), { name: 'webhooks-test' });
  });
  afterAll(async () => {
    conn?.disconnect();
    await redis?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const videoDir = () => path.join(root, 'videos');
  const sender = (deliverer: Deliverer, claimMs = 5_000, retryForMs = 60_000) =>
    new WebhookSender({ redis: conn, webhooksDir: webhooksDir(videoDir()), deliverer, log, retryBaseMs: 30, retryForMs, claimMs, pollMs: 50 });

  it('records the event in the same step as meta.json, with ids, status and times only', async () => {
    const store = new MediaStore(videoDir(), conn);
    const videoId = '6b1f3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e';
    await store.write(meta(videoId));
    await markQueued(store, videoId);
    const files = readdirSync(outboxDir(videoDir()));
    expect(files).toHaveLength(1);
    const raw = readFileSync(path.join(outboxDir(videoDir()), files[0]!), 'utf8');
    const event = JSON.parse(raw) as WebhookEvent;
    expect(event).toMatchObject({ type: 'video.finalized', data: { videoId, status: 'queued' } });
    expect(raw).not.toMatch(/jane|patient|mri|phi|owner-1/i);
    // A repeat of a move that was kept records nothing new.
    await markQueued(store, videoId);
    expect(readdirSync(outboxDir(videoDir()))).toHaveLength(1);
  });

  it('a receiver failing three times then succeeding gets four attempts, one webhook-id, each verifying', async () => {
    const rx = await receiver((n, res) => res.writeHead(n <= 3 ? 500 : 204).end());
    const endpoints = new EndpointStore(webhooksDir(videoDir()));
    const ep = await endpoints.create({ url: rx.url, events: ['video.finalized', 'video.failed'] }, LOOPBACK, false);
    const deliverer = new Deliverer(LOOPBACK, 10_000, false);
    const s = sender(deliverer);
    s.start();
    try {
      await waitFor(() => rx.hits.length >= 4 && readdirSync(outboxDir(videoDir())).length === 0, 20_000, 'four attempts and an empty outbox');
      expect(new Set(rx.hits.map((h) => h.headers['webhook-id'])).size).toBe(1);
      for (const hit of rx.hits) expect(new Webhook(ep.secrets[0]!.secret).verify(hit.body, hit.headers)).toMatchObject({ type: 'video.finalized' });
    } finally {
      await s.stop();
      deliverer.close();
      rx.server.close();
      await endpoints.remove(ep.id);
    }
  });

  it('retries exhausted: a dead letter on disk, the outbox emptied; `webhooks replay` delivers it, same webhook-id, and the dead letter goes', async () => {
    let up = false;
    const rx = await receiver((_, res) => res.writeHead(up ? 204 : 500).end());
    const endpoints = new EndpointStore(webhooksDir(videoDir()));
    const ep = await endpoints.create({ url: rx.url, events: ['video.failed'] }, LOOPBACK, false);
    const store = new MediaStore(videoDir(), conn);
    const videoId = '4f0e3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e';
    await store.write(meta(videoId));
    await markFailed(store, videoId, 'ffmpeg');
    const deliverer = new Deliverer(LOOPBACK, 10_000, false);
    const s = sender(deliverer, 5_000, 150);
    const deadDir = path.join(webhooksDir(videoDir()), 'dead', ep.id);
    s.start();
    try {
      await waitFor(() => readdirSync(outboxDir(videoDir())).length === 0 && readdirSync(deadDir).length === 1, 10_000, 'the dead letter');
      const failedAttempts = rx.hits.length;
      expect(failedAttempts).toBeGreaterThanOrEqual(1);
      up = true;
      expect(await replayDeadLetters(conn, webhooksDir(videoDir()))).toBe(1);
      await waitFor(() => rx.hits.length > failedAttempts && readdirSync(deadDir).length === 0, 10_000, 'the replayed delivery');
      expect(new Set(rx.hits.map((h) => h.headers['webhook-id'])).size).toBe(1);
      expect(new Webhook(ep.secrets[0]!.secret).verify(rx.hits.at(-1)!.body, rx.hits.at(-1)!.headers)).toMatchObject({ type: 'video.failed', data: { videoId } });
      expect(await replayDeadLetters(conn, webhooksDir(videoDir()))).toBe(0);
    } finally {
      await s.stop();
      deliverer.close();
      rx.server.close();
      await endpoints.remove(ep.id);
    }
  });

  it('the sender process killed -9 mid-delivery: restarted, it delivers again with the same webhook-id, and the outbox empties', async () => {
    let hang = true;
    const rx = await receiver((_, res) => (hang ? undefined : res.writeHead(200).end()));
    // The endpoint's secret wrapped by the KEK the sender process is given (as in production).
    const kek = { id: 'k1', key: Buffer.alloc(32, 9) };
    const endpoints = new EndpointStore(webhooksDir(videoDir()), new SecretKek(kek));
    const ep = await endpoints.create({ url: rx.url, events: ['video.failed'] }, LOOPBACK, false);
    const store = new MediaStore(videoDir(), conn);
    const videoId = '5a0e3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e';
    await store.write(meta(videoId));
    await markFailed(store, videoId, 'ffmpeg');
    // The real service as a Deployment runs it; a 1 s attempt deadline makes its claim 3 s.
    const env = { ...baseTestEnv(), REDIS_URL: redis.url, VIDEO_DIR: videoDir(), WEBHOOK_ALLOWED_HOSTS: '127.0.0.1/32', WEBHOOK_TIMEOUT_SECONDS: '1', WEBHOOK_RETRY_BASE: '50ms', MEDIA_KEK: `k1:${kek.key.toString('base64')}` };
    const first = spawnNode(['dist/services/webhook-sender/main.js'], env);
    let second: ReturnType<typeof spawnNode> | null = null;
    try {
      await waitFor(() => {
        if (first.child.exitCode !== null) throw new Error(`the sender exited: ${first.output()}`);
        return rx.hits.length >= 1;
      }, 15_000, 'the first attempt, held open by the receiver');
      first.child.kill('SIGKILL');
      expect(await first.exited).toBe(null);
      // Its claim on the delivery is still in Redis; nothing answered the request.
      expect(readdirSync(outboxDir(videoDir()))).toHaveLength(1);
      hang = false;
      second = spawnNode(['dist/services/webhook-sender/main.js'], env);
      await waitFor(() => rx.hits.length >= 2 && readdirSync(outboxDir(videoDir())).length === 0, 15_000, 'the delivery made again by the restarted sender');
      expect(rx.hits[1]!.headers['webhook-id']).toBe(rx.hits[0]!.headers['webhook-id']);
      for (const hit of rx.hits) expect(new Webhook(ep.secrets[0]!.secret).verify(hit.body, hit.headers)).toMatchObject({ type: 'video.failed', data: { videoId, status: 'failed' } });
    } finally {
      first.child.kill('SIGKILL');
      second?.child.kill('SIGTERM');
      if (second) expect(await second.exited).toBe(0);
      rx.server.closeAllConnections();
      rx.server.close();
      await endpoints.remove(ep.id);
    }
  });

  it('Redis losing its data while one endpoint’s delivery is in flight: that delivery settling does not remove the event another endpoint still needs', async () => {
    let release: (() => void) | null = null;
    // A holds its first request open (answered after the loss); a repeat is answered at once.
    const a = await receiver((n, res) => (n === 1 ? (release = () => res.writeHead(204).end()) : res.writeHead(204).end()));
    let bUp = false;
    const b = await receiver((_, res) => res.writeHead(bUp ? 204 : 503).end());
    const endpoints = new EndpointStore(webhooksDir(videoDir()));
    const epA = await endpoints.create({ url: a.url, events: ['video.failed'] }, LOOPBACK, false);
    const epB = await endpoints.create({ url: b.url, events: ['video.failed'] }, LOOPBACK, false);
    const store = new MediaStore(videoDir(), conn);
    const videoId = '3e0e3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e';
    await store.write(meta(videoId));
    await markFailed(store, videoId, 'ffmpeg');
    const deliverer = new Deliverer(LOOPBACK, 10_000, false);
    const s = sender(deliverer);
    s.start();
    try {
      await waitFor(() => a.hits.length === 1 && b.hits.length >= 1, 10_000, 'both endpoints tried');
      await redis.kill(); // every delivery state gone while A's request is open
      await redis.start();
      release!();
      bUp = true;
      await waitFor(() => b.hits.some((h, i) => i > 0) && readdirSync(outboxDir(videoDir())).length === 0, 20_000, 'B delivered after the loss');
      expect(new Set([...a.hits, ...b.hits].map((h) => h.headers['webhook-id'])).size).toBe(1);
    } finally {
      await s.stop();
      deliverer.close();
      a.server.closeAllConnections();
      a.server.close();
      b.server.close();
      await endpoints.remove(epA.id);
      await endpoints.remove(epB.id);
    }
  });

  it('a receiver down across a Redis restart that lost its data still gets the event, rebuilt from the outbox', async () => {
    let up = false;
    const rx = await receiver((_, res) => res.writeHead(up ? 200 : 503).end());
    const endpoints = new EndpointStore(webhooksDir(videoDir()));
    const ep = await endpoints.create({ url: rx.url, events: ['video.deleted', 'video.updated', 'video.finalized'] }, LOOPBACK, false);
    const store = new MediaStore(videoDir(), conn);
    const videoId = '7c2f3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e';
    await store.write(meta(videoId));
    await markQueued(store, videoId);
    const deliverer = new Deliverer(LOOPBACK, 10_000, false);
    const s = sender(deliverer);
    s.start();
    try {
      await waitFor(() => rx.hits.length >= 1, 10_000, 'a failed attempt');
      await redis.kill(); // no persistence: every delivery state is gone
      await redis.start();
      up = true;
      await waitFor(() => rx.hits.some((h, i) => i > 0) && readdirSync(outboxDir(videoDir())).length === 0, 30_000, 'delivery after the restart');
      const ids = new Set(rx.hits.map((h) => h.headers['webhook-id']));
      expect(ids.size).toBe(1);
    } finally {
      await s.stop();
      deliverer.close();
      rx.server.close();
    }
  });
});

describe('docs/api.md receiver', () => {
  it('verifies a real delivery, unmodified', async () => {
    const doc = readFileSync('docs/api.md', 'utf8');
    const code = /<!-- receiver -->\n```js\n([\s\S]*?)\n```/.exec(doc)?.[1];
    expect(code).toBeTruthy();
    const { freePort } = await import('../services/devstack/supervisor.js');
    const { spawn } = await import('node:child_process');
    const port = await freePort();
    const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    // cwd = the repository: the snippet's `standardwebhooks` resolves from its node_modules.
    const child = spawn(process.execPath, ['--input-type=module', '-e', code!], { env: { ...process.env, WEBHOOK_SECRET: secret, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const d = new Deliverer(LOOPBACK, 10_000, false);
    try {
      const body = JSON.stringify({ type: 'video.ready', timestamp: new Date().toISOString(), data: { videoId: '6b1f3c2e-1d2a-4b3c-9d4e-5f6a7b8c9d0e' } });
      const url = `http://127.0.0.1:${port}/hooks`;
      const outcome = await waitFor(async () => {
        const o = await d.attempt(url, signDelivery([secret], 'msg_doc', new Date(), body), body);
        return o.ok || o.status !== null ? o : false; // not listening yet: no status
      }, 10_000, 'the receiver to answer');
      expect(outcome).toMatchObject({ ok: true, status: 204 });
      await waitFor(() => out.includes('verified msg_doc video.ready 6b1f3c2e-'), 5_000, 'the receiver to log the verification');
      // A wrong secret is refused by the same receiver.
      expect(await d.attempt(url, signDelivery([`whsec_${Buffer.alloc(32, 8).toString('base64')}`], 'msg_bad', new Date(), body), body)).toMatchObject({ ok: false, status: 400 });
    } finally {
      d.close();
      child.kill();
    }
  });
});
