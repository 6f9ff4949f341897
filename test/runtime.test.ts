/** The template runtime as a real process: health, metrics, request ids, error mapping, graceful shutdown. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../services/devstack/supervisor.js';
import { TEST_HMAC_SECRET } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

let child: ChildProcess | null = null;
let output = '';
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-runtime-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function startRuntime(workload: Record<string, string> = {}): Promise<string> {
  const port = await freePort();
  output = '';
  child = spawn(process.execPath, ['dist/templates/pulsevault-node20/runtime/main.js', 'test/fixtures/slow-handler.mjs'], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', HMAC_SECRET: TEST_HMAC_SECRET, FUNCTION_NAME: 'fixture', SHUTDOWN_TIMEOUT_SECONDS: '10', SECRETS_DIR: '/nonexistent', TMPDIR: tmp, ...workload },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  await waitFor(() => fetch(`${base}/_/health`).then((r) => r.ok).catch(() => false), 15_000, 'runtime health');
  return base;
}

afterEach(() => {
  child?.kill('SIGKILL');
  child = null;
});

describe('template runtime', () => {
  it('answers health and exposes the request histogram labelled function/method/route/status', async () => {
    const base = await startRuntime();
    expect(await (await fetch(`${base}/_/health`)).json()).toEqual({ status: 'ok', function: 'fixture' });
    await fetch(`${base}/conflict`);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/# HELP http_request_duration_seconds /);
    expect(text).toMatch(/http_request_duration_seconds_count\{[^}]*function="fixture"[^}]*method="GET"[^}]*route="unmatched"[^}]*status="409"[^}]*\} 1/);
    expect(text).toMatch(/process_resident_memory_bytes/);
  });

  it('maps a typed error to JSON and hides an unexpected one', async () => {
    const base = await startRuntime();
    const conflict = await fetch(`${base}/conflict`, { headers: { 'X-Call-Id': 'call-123' } });
    expect(conflict.status).toBe(409);
    expect(await conflict.json()).toEqual({ error: 'upload_incomplete', message: 'upload is not complete', requestId: 'call-123' });
    const bug = await fetch(`${base}/bug`);
    expect(bug.status).toBe(500);
    const body = (await bug.json()) as { error: string; message: string; requestId: string };
    expect(body).toMatchObject({ error: 'internal', message: 'internal server error' });
    expect(body.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.stringify(body)).not.toContain('/mnt/media');
  });

  it('reuses the gateway X-Call-Id as the request id and generates one otherwise', async () => {
    const base = await startRuntime();
    expect(await (await fetch(`${base}/echo-id`, { headers: { 'X-Call-Id': 'abc-1' } })).text()).toBe('abc-1');
    const generated = await fetch(`${base}/echo-id`);
    expect(await generated.text()).toMatch(/^[0-9a-f-]{36}$/);
    expect(generated.headers.get('x-call-id')).toMatch(/^[0-9a-f-]{36}$/);
    // JSON log lines carry level, time, function and the request id.
    await waitFor(() => output.includes('"requestId":"abc-1"'), 5_000, 'request log line');
    const line = JSON.parse(output.split('\n').find((l) => l.includes('"requestId":"abc-1"'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 'info', function: 'fixture', requestId: 'abc-1' });
    expect(typeof line.time).toBe('string');
  });

  it('continues the caller’s W3C trace with a new span, or starts one, and logs its trace id', async () => {
    const base = await startRuntime();
    const parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const continued = await (await fetch(`${base}/echo-trace`, { headers: { traceparent: parent } })).text();
    expect(continued).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(continued).not.toBe(parent);
    const fresh = await (await fetch(`${base}/echo-trace`, { headers: { traceparent: 'garbage' } })).text();
    expect(fresh).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    await waitFor(() => output.includes('"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"'), 5_000, 'log line with the trace id');
  });

  it('on SIGTERM finishes the in-flight request, refuses new ones, and exits 0', async () => {
    const base = await startRuntime();
    const url = new URL(`${base}/slow`);
    const inflight = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(url, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
          // The request is being answered: now ask the process to stop.
          if (body === 'start\n') child!.kill('SIGTERM');
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    const exit = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const result = await inflight;
    expect(result).toEqual({ status: 200, body: 'start\nend\n' });
    expect(await exit).toBe(0);
    await expect(fetch(`${base}/_/health`)).rejects.toThrow();
    expect(output).toContain('draining in-flight requests');
  });

  it('serves the OpenFaaS workload contract itself: max_inflight → 429, exec_timeout → 504, read_timeout → 408', async () => {
    const base = await startRuntime({ max_inflight: '1', exec_timeout: '2s', write_timeout: '5s', read_timeout: '1s' });
    const held = fetch(`${base}/hang`);
    let refused: Response | undefined;
    await waitFor(async () => (refused = await fetch(`${base}/echo-id`)).status === 429, 5_000, 'the one slot taken → 429');
    expect(((await refused!.json()) as { error: string }).error).toBe('too_many_requests');
    // Probes are never counted against max_inflight.
    expect((await fetch(`${base}/_/ready`)).status).toBe(200);
    const timedOut = await held;
    expect(timedOut.status).toBe(504);
    expect(((await timedOut.json()) as { error: string }).error).toBe('timeout');
    expect(await (await fetch(`${base}/echo-id`)).text()).toMatch(/^[0-9a-f-]{36}$/);

    // A body that does not arrive within read_timeout: 408 and the connection closes.
    const port = Number(new URL(base).port);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.write('POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc'));
      let data = '';
      socket.on('data', (d: Buffer) => (data += d.toString()));
      socket.on('close', () => resolve(data));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    // The 408'd request frees its max_inflight slot when its response closes on the server, which can come
    // after the client has already seen the socket close: wait for the slot before the next check.
    await waitFor(async () => (await fetch(`${base}/echo-id`)).status === 200, 5_000, 'the slot of the 408 request to be free');
    // read_timeout bounds receiving the request only: a response that takes longer (1.5 s) is not cut.
    expect(await (await fetch(`${base}/slow`)).text()).toBe('start\nend\n');
  });

  it('keeps the lock file faas-netes’ exec probe reads while serving, and reports draining on SIGTERM', async () => {
    // A healthcheck_interval far longer than the steps below: they all run inside it even on a loaded machine
    // (with 1 s they did not: a late /echo-id found the listener closed).
    const base = await startRuntime({ write_timeout: '60s', exec_timeout: '60s', healthcheck_interval: '30s' });
    expect(existsSync(path.join(tmp, '.lock'))).toBe(true);
    const slow = fetch(`${base}/slow`).then((r) => r.text());
    child!.kill('SIGTERM');
    // During healthcheck_interval the replica still serves, but says it is not ready.
    await waitFor(async () => (await fetch(`${base}/_/ready`)).status === 503, 20_000, 'ready → 503');
    expect(existsSync(path.join(tmp, '.lock'))).toBe(false);
    expect(await (await fetch(`${base}/echo-id`)).text()).toMatch(/^[0-9a-f-]{36}$/);
    expect(await slow).toBe('start\nend\n');
  });
});
