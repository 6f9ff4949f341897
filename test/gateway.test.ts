/**
 * The local gateway: routing table, /function/<name> prefix stripping, the
 * headers the OpenFaaS gateway sets, and bodies that stream (never buffered).
 */
import { Agent, createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/platform/log.js';
import { FUNCTIONS, matchPublicRoute, parseFunctionPath } from '../services/gateway/routes.js';
import { createGateway, type GatewayBackend } from '../services/gateway/gateway.js';

const listen = (s: Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

/** One upstream per function that echoes what it received. */
const seen: { fn: string; url: string; headers: IncomingMessage['headers'] }[] = [];
let chunkArrived: (() => void) | null = null;
const upstreams = new Map<string, string>();
const servers: Server[] = [];
let gateway: Server;
let base: string;

beforeAll(async () => {
  for (const fn of FUNCTIONS) {
    const srv = createServer((req, res) => {
      seen.push({ fn, url: req.url ?? '', headers: req.headers });
      if (req.url === '/stream-in') {
        let bytes = 0;
        req.on('data', (c: Buffer) => {
          bytes += c.length;
          chunkArrived?.();
        });
        req.on('end', () => res.end(JSON.stringify({ bytes })));
        return;
      }
      if (req.url === '/stream-out') {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        res.write(Buffer.alloc(1024, 1));
        // The rest only after the client proves it saw the first chunk (it aborts or asks below).
        req.socket.once('close', () => res.destroy());
        return;
      }
      if (req.url === '/refuse') {
        // An early refusal, as a function's: answered at once, the request body not read.
        res.writeHead(409, { 'Content-Type': 'application/json' });
        return void res.end(JSON.stringify({ error: 'upload_offset_conflict', message: 'refused' }));
      }
      req.resume();
      req.on('end', () => res.end(JSON.stringify({ fn })));
    });
    servers.push(srv);
    upstreams.set(fn, `http://127.0.0.1:${await listen(srv)}`);
  }
  const backend: GatewayBackend = {
    has: (fn) => upstreams.has(fn),
    pick: (fn) => upstreams.get(fn),
    health: async () => ({ status: 'ok' }),
    metrics: async () => '# none\n',
    systemFunctions: () => [...upstreams.keys()].map((name) => ({ name })),
  };
  gateway = createGateway(backend, createLogger('test', 'error'));
  base = `http://127.0.0.1:${await listen(gateway)}`;
});

afterAll(async () => {
  for (const s of [...servers, gateway]) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

describe('routing table', () => {
  it.each([
    ['POST', '/uploads', 'tus-upload'],
    ['PATCH', '/uploads/abc123', 'tus-upload'],
    ['HEAD', '/uploads/abc123', 'tus-upload'],
    ['DELETE', '/uploads/abc123', 'tus-upload'],
    ['OPTIONS', '/uploads', 'tus-upload'],
    ['POST', '/uploads/finalize', 'finalize'],
    ['POST', '/media/sign', 'sign'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/metadata', 'metadata'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/renditions', 'metadata'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/hls/master.m3u8', 'stream'],
    ['HEAD', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/original.mp4', 'stream'],
    ['GET', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/hls/metadata', 'stream'],
    ['GET', '/media/videos', 'metadata'],
  ])('%s %s → %s with the path unchanged', async (method, path, fn) => {
    const res = await fetch(`${base}${path}?token=t`, { method });
    expect(res.status).toBe(200);
    const last = seen.at(-1)!;
    expect(last.fn).toBe(fn);
    expect(last.url).toBe(`${path}?token=t`);
    expect(matchPublicRoute(method, path)?.route.function).toBe(fn);
  });

  it('answers 405 with Allow for a method a route does not take, and 404 off the table', async () => {
    const res = await fetch(`${base}/media/sign`, { method: 'GET' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toContain('POST');
    expect(await res.json()).toMatchObject({ error: 'method_not_allowed' });
    const missing = await fetch(`${base}/nothing/here`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'not_found' });
  });
});

describe('/function/<name>/...', () => {
  it('strips the prefix and keeps the query, as the OpenFaaS gateway does', async () => {
    expect(parseFunctionPath('/function/sign')).toEqual({ name: 'sign', path: '/' });
    const res = await fetch(`${base}/function/tus-upload/uploads/abc?x=1`, { method: 'PATCH', body: 'x' });
    expect(res.status).toBe(200);
    expect(seen.at(-1)).toMatchObject({ fn: 'tus-upload', url: '/uploads/abc?x=1' });
  });

  it('sets X-Forwarded-For/Host and a fresh X-Call-Id, keeping a caller-set forwarded host', async () => {
    await fetch(`${base}/function/sign/`, { method: 'POST', body: '{}' });
    const h = seen.at(-1)!.headers;
    expect(h['x-forwarded-for']).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(h['x-forwarded-host']).toBe(new URL(base).host);
    expect(h['x-call-id']).toMatch(/^[0-9a-f-]{36}$/);
    await fetch(`${base}/function/sign/`, { method: 'POST', body: '{}', headers: { 'X-Forwarded-Host': 'vault.example.org' } });
    expect(seen.at(-1)!.headers['x-forwarded-host']).toBe('vault.example.org');
  });

  it('never hands on an edge-only header (X-Media-Edge…): only the media edge sends those, with its key', async () => {
    const edge = { 'X-Media-Edge': 'grant', 'X-Media-Edge-Token': 't', 'X-Media-Edge-File': 'hls/a.m4s', 'X-Media-Edge-Key': 'k'.repeat(64) };
    for (const url of ['/function/stream/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/hls/a.m4s?token=t', '/media/videos/6f1c2a10-5b0e-4b7e-9d3c-2a4f8e9b1c00/hls/a.m4s?token=t']) {
      expect((await fetch(`${base}${url}`, { headers: edge })).status).toBe(200);
      const h = seen.at(-1)!.headers;
      expect(Object.keys(h).filter((k) => k.startsWith('x-media-edge')), url).toEqual([]);
    }
  });

  it('404s an unknown function', async () => {
    const res = await fetch(`${base}/function/nope/`);
    expect(res.status).toBe(404);
  });
});

describe('an answer before the request body was read', () => {
  /** One keep-alive connection: what is sent after an early refusal goes on the same socket, if it is still open. */
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  afterAll(() => agent.destroy());
  const send = (path: string, method: string, body?: Buffer) =>
    new Promise<{ status: number; body: string; socket: Socket }>((resolve, reject) => {
      // 10 s: each answers in milliseconds; a connection left with an unread body would hang until then.
      const req = request(`${base}${path}`, { method, agent, signal: AbortSignal.timeout(10_000) }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: text, socket: req.socket! }));
      });
      req.on('error', reject);
      req.end(body);
    });

  it("hands on the function's refusal of an 8 MiB body, drops the rest, and the connection carries the next request", async () => {
    const refused = await send('/function/tus-upload/refuse', 'PATCH', Buffer.alloc(8 * 1024 * 1024, 1));
    expect(refused.status).toBe(409);
    expect(JSON.parse(refused.body)).toMatchObject({ error: 'upload_offset_conflict' });
    const next = await send('/function/tus-upload/next', 'GET');
    expect(next.status).toBe(200);
    expect(next.socket).toBe(refused.socket);
  });

  it('refuses an 8 MiB body itself (405, 404) and the connection carries the next request', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024, 1);
    const refused = [await send('/uploads', 'PUT', body), await send('/nowhere', 'POST', body)];
    expect(refused.map((r) => [r.status, JSON.parse(r.body).error])).toEqual([[405, 'method_not_allowed'], [404, 'not_found']]);
    const next = await send('/function/tus-upload/next', 'GET');
    expect(next.status).toBe(200);
    expect(new Set([...refused, next].map((r) => r.socket)).size).toBe(1);
  });
});

describe('streaming', () => {
  it('delivers request body chunks to the function before the client has finished sending', async () => {
    // If the gateway buffered the body, the upstream would see nothing until the end, and this would hang.
    const chunk = Buffer.alloc(256 * 1024, 7);
    const rounds = 8;
    const result = await new Promise<{ bytes: number }>((resolve, reject) => {
      const req = request(`${base}/function/tus-upload/stream-in`, { method: 'PATCH' }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(JSON.parse(body) as { bytes: number }));
      });
      req.on('error', reject);
      let sent = 0;
      const sendNext = () => {
        if (sent === rounds) {
          chunkArrived = null;
          return void req.end();
        }
        sent += 1;
        req.write(chunk);
      };
      chunkArrived = () => {
        // Send the next chunk only once the upstream has seen bytes of this one.
        const c = chunkArrived;
        chunkArrived = null;
        setImmediate(() => {
          chunkArrived = c;
          sendNext();
        });
      };
      sendNext();
    });
    expect(result.bytes).toBe(chunk.length * rounds);
  });

  it('streams a response body to the client before the function has finished it', async () => {
    const res = await fetch(`${base}/function/stream/stream-out`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.value?.length).toBeGreaterThan(0);
    await reader.cancel();
  });
});
