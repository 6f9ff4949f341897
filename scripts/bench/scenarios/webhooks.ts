/**
 * 10. Webhook delivery: N events written to a scratch outbox (as the status moves write them),
 * delivered by the real WebhookSender (shared/webhooks/sender.ts: claim in Redis, sign with
 * standardwebhooks, POST through the allow-listed agent, settle) to one local receiver, against
 * a bare Node `fetch` loop POSTing the same N bodies to the same receiver one after another —
 * one in flight, as the sender has per endpoint. Same run, the stack's Redis. Goal ≥ 0.5×.
 */
import { mkdirSync, readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createLogger } from '../../../shared/platform/log.js';
import { parseAllowList } from '../../../shared/webhooks/allow-list.js';
import { Deliverer } from '../../../shared/webhooks/deliver.js';
import { EndpointStore } from '../../../shared/webhooks/endpoints.js';
import { recordEvent, type WebhookEvent } from '../../../shared/webhooks/events.js';
import { WebhookSender } from '../../../shared/webhooks/sender.js';
import type { BenchContext } from '../context.js';
import type { Row } from '../table.js';

export async function benchWebhooks(ctx: BenchContext): Promise<Row[]> {
  const events = ctx.mode === 'full' ? 5_000 : 1_000;
  const root = path.join(ctx.scratch, 'webhooks-bench');
  const videoDir = path.join(root, 'videos');
  mkdirSync(videoDir, { recursive: true });
  let received = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received++;
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hooks`;
  const list = parseAllowList(['127.0.0.1/32']);
  const redis = new Redis(ctx.stack.redisUrl, { lazyConnect: false });
  const deliverer = new Deliverer(list, 10_000, false);
  try {
    const body = (i: number) => JSON.stringify({ type: 'video.ready', timestamp: new Date().toISOString(), data: { videoId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, status: 'transcoded', renditions: ['240p'] } });
    ctx.progress(`10. bare fetch loop: ${events} POSTs`);
    let t = performance.now();
    for (let i = 0; i < events; i++) {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(i) });
      await res.arrayBuffer();
    }
    const fetchSeconds = (performance.now() - t) / 1000;

    ctx.progress(`10. webhook sender: ${events} events from the outbox`);
    await new EndpointStore(path.join(root, 'webhooks')).create({ url, events: ['video.ready'] }, list, false);
    for (let i = 0; i < events; i++) {
      const event: WebhookEvent = { id: `msg_${i.toString(16).padStart(32, '0')}`, type: 'video.ready', timestamp: new Date().toISOString(), data: { videoId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, status: 'transcoded', renditions: ['240p'], uploadedAt: new Date().toISOString(), transcodedAt: null, deletedAt: null } };
      await recordEvent(videoDir, event);
    }
    received = 0;
    const sender = new WebhookSender({ redis, webhooksDir: path.join(root, 'webhooks'), deliverer, log: createLogger('bench-webhooks', 'error'), retryBaseMs: 1_000, retryForMs: 86_400_000, claimMs: 30_000, pollMs: 20 });
    t = performance.now();
    sender.start();
    const deadline = Date.now() + 600_000;
    while (readdirSync(path.join(root, 'webhooks', 'outbox')).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const senderSeconds = (performance.now() - t) / 1000;
    await sender.stop();
    return [
      {
        scenario: `10. Webhooks delivered to a local receiver (${events} events, one endpoint)`,
        pulsevault: { value: events / senderSeconds, unit: 'events/s' },
        reference: { value: events / fetchSeconds, unit: 'events/s' },
        referenceName: 'bare Node fetch loop, one POST in flight, same receiver',
        better: 'higher',
        commands: ['in-harness: WebhookSender over a scratch outbox → 127.0.0.1 receiver (signed, claimed in Redis, settled)', 'in-harness: for (…) await fetch(receiver, {method: POST})'],
        note: `receiver counted ${received} deliveries; goal ≥ 0.5× the fetch loop`,
      },
    ];
  } finally {
    deliverer.close();
    redis.disconnect();
    server.close();
  }
}
