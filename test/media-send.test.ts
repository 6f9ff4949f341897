/**
 * streamFile over real HTTP on loopback: segment-sized responses are read
 * whole within a per-process memory budget, larger ones stream; both are
 * byte-exact, and slow or vanished clients give their budget back.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamFile, WHOLE_READ_BUDGET_BYTES, WHOLE_READ_MAX_BYTES, wholeReadBytes } from '../shared/delivery/media-response.js';
import { waitFor } from './helpers/wait.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(path.join(tmpdir(), 'pv-send-'));
const file = path.join(dir, 'media.bin');
const content = randomBytes(WHOLE_READ_MAX_BYTES + 3 * MiB);
let server: Server;
let base: string;
let openHandles = 0;

beforeAll(async () => {
  writeFileSync(file, content);
  // GET /?start=&end= → those bytes (inclusive), as the stream function sends them after its checks.
  server = createServer(async (req, res) => {
    const q = new URL(req.url!, 'http://x').searchParams;
    const start = Number(q.get('start'));
    const end = Number(q.get('end'));
    const handle = await open(file);
    openHandles += 1;
    const close = handle.close.bind(handle);
    let closed = false;
    handle.close = () => {
      if (!closed) openHandles -= 1;
      closed = true;
      return close();
    };
    res.writeHead(200, { 'Content-Length': String(end - start + 1) });
    await streamFile(res, handle, start, end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

async function get(start: number, end: number): Promise<Buffer> {
  const res = await fetch(`${base}/?start=${start}&end=${end}`);
  return Buffer.from(await res.arrayBuffer());
}

/** A client that has received the headers and then stops reading. */
function stalledClient(start: number, end: number): Promise<{ res: IncomingMessage; drain(): Promise<Buffer>; abort(): void }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/?start=${start}&end=${end}`, (res) => {
      res.pause();
      resolve({
        res,
        drain: () =>
          new Promise((done) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => done(Buffer.concat(chunks)));
            res.resume();
          }),
        abort: () => req.destroy(),
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
}

describe('streamFile', () => {
  it('sends segment-sized ranges and larger ones byte-exact', async () => {
    for (const [start, end] of [
      [0, 0],
      [17, MiB + 16], // whole read
      [0, WHOLE_READ_MAX_BYTES - 1], // the largest whole read
      [1, WHOLE_READ_MAX_BYTES + 1], // one byte over: streamed
      [0, content.length - 1], // streamed
    ] as const) {
      expect((await get(start, end)).equals(content.subarray(start, end + 1)), `bytes ${start}-${end}`).toBe(true);
    }
    await waitFor(() => openHandles === 0, 5_000, 'every file handle to be closed');
    expect(wholeReadBytes()).toBe(0);
  });

  it('bounds the memory that stalled clients pin, and gets it back when they finish or leave', async () => {
    const size = WHOLE_READ_MAX_BYTES;
    const wholeFits = Math.floor(WHOLE_READ_BUDGET_BYTES / size);
    const clients = await Promise.all(Array.from({ length: wholeFits + 3 }, () => stalledClient(0, size - 1)));
    // Every whole-read response is read and handed to its socket; the rest wait as streams with their file open.
    await waitFor(() => wholeReadBytes() === wholeFits * size, 10_000, 'the whole-read budget to fill');
    expect(wholeReadBytes()).toBeLessThanOrEqual(WHOLE_READ_BUDGET_BYTES);
    expect(openHandles).toBe(3);

    const [first, second, ...rest] = clients;
    expect((await first!.drain()).equals(content.subarray(0, size))).toBe(true);
    second!.abort();
    for (const c of rest) c.abort();
    await waitFor(() => wholeReadBytes() === 0 && openHandles === 0, 10_000, 'stalled clients to release their buffers and files');
  });
});
