/** readJsonBody over real HTTP: the JSON bodies of sign, finalize and the listing's callers. */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHttpError } from '../shared/platform/errors.js';
import { readJsonBody } from '../shared/platform/http.js';
import { waitFor } from './helpers/wait.js';

const LIMIT = 1024;
let server: Server;
let base: string;
/** What readJsonBody settled with, per request, in arrival order. */
const outcomes: string[] = [];
let started = 0;

beforeAll(async () => {
  server = createServer(async (req, res) => {
    started += 1;
    try {
      const body = await readJsonBody(req, LIMIT);
      outcomes.push('parsed');
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    } catch (err) {
      const e = toHttpError(err);
      outcomes.push(`${e.status} ${e.code}`);
      if (!res.destroyed) res.writeHead(e.status, { Connection: 'close' }).end(e.code);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** POST `parts` as a chunked body (no Content-Length), one write each; `abort` destroys the request once the server reads it. */
function post(parts: string[], { abort = false, type = 'application/json' } = {}): Promise<{ status: number; body: string } | null> {
  const seen = started;
  return new Promise((resolve) => {
    const req = request(`${base}/`, { method: 'POST', headers: { 'Content-Type': type } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', () => resolve(null));
    for (const part of parts) req.write(part);
    if (abort) void waitFor(() => started > seen, 5_000, 'the server to take the request').then(() => req.destroy());
    else req.end();
  });
}

describe('readJsonBody', () => {
  it('parses a JSON body sent in several chunks', async () => {
    expect(await post(['{"videoId":', '"a",', '"n":1}'])).toEqual({ status: 200, body: '{"videoId":"a","n":1}' });
  });

  it('answers 400 for a body that is not JSON, and for the wrong Content-Type', async () => {
    expect((await post(['{"videoId":']))?.status).toBe(400);
    expect(await post(['{}'], { type: 'text/plain' })).toMatchObject({ status: 400, body: 'unsupported_content_type' });
  });

  it('answers 413 as soon as a chunked body passes the limit', async () => {
    const res = await post(['{"pad":"', 'x'.repeat(LIMIT), '"}']);
    expect(res?.status).toBe(413);
  });

  it('settles (no request left hanging) when the client goes away mid-body', async () => {
    const before = outcomes.length;
    expect(await post(['{"videoId":"a"'], { abort: true })).toBeNull();
    await waitFor(() => outcomes.length > before, 5_000, 'readJsonBody to settle');
    expect(outcomes.at(-1)).toBe('400 incomplete_body');
  });
});
