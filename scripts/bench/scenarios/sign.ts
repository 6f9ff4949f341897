/**
 * 4. Sign: req/s of `POST /media/sign` through the gateway (parse, meta read,
 *    ownership, file check, HMAC, audit entry), against a bare Node HTTP server
 *    answering the same JSON.
 */
import type { BenchContext } from '../context.js';
import { startServerWorker, workerCommand } from '../processes.js';
import type { Row } from '../table.js';
import { wrk } from '../tools.js';

const CONNECTIONS = 50;

export async function benchSign(ctx: BenchContext, videoId: string): Promise<Row[]> {
  const { stack, sizes } = ctx;
  const body = JSON.stringify({ videoId, path: 'original.mp4' });
  // The reference answers what sign answers (same shape and length).
  const answer = await fetch(`${stack.url}/media/sign`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: stack.authorization }, body });
  const answerBody = await answer.text();
  if (!answer.ok) throw new Error(`sign answered ${answer.status}: ${answerBody}`);
  const env = { BENCH_BODY: body, BENCH_AUTHORIZATION: stack.authorization };
  const run = { threads: 2, connections: CONNECTIONS, seconds: sizes.wrkSeconds, script: 'post-json.lua' as const, env };

  ctx.progress('4. sign');
  const pv = await wrk({ ...run, url: `${stack.url}/media/sign`, shownUrl: '<gateway>/media/sign' });
  ctx.progress('4. sign, straight to the sign function');
  const direct = await wrk({ ...run, url: `${await stack.functionUrl('sign')}/media/sign`, shownUrl: '<sign function>/media/sign' });
  ctx.progress('4. bare Node JSON server');
  const server = await startServerWorker('json-server', [answerBody]);
  let ref;
  try {
    ref = await wrk({ ...run, url: `http://127.0.0.1:${server.port}/media/sign`, shownUrl: '<reference>/media/sign' });
  } finally {
    await server.stop();
  }
  const ok = (r: typeof pv) => r.errors <= r.requests * 0.01;
  const latency = (r: typeof pv) => `p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms${r.errors ? `, ${r.errors} errors` : ''}`;
  return [
    {
      scenario: `4. Sign: POST /media/sign, ${CONNECTIONS} connections, ${sizes.wrkSeconds} s`,
      pulsevault: ok(pv) ? { value: pv.requestsPerSecond, unit: 'req/s' } : null,
      reference: ok(ref) ? { value: ref.requestsPerSecond, unit: 'req/s' } : null,
      referenceName: 'bare Node HTTP server answering the same JSON',
      better: 'higher',
      commands: [pv.command, ref.command, workerCommand('json-server', ['<the JSON sign answered>'])],
      note: `HS256 JWT of the video's owner (AUTH_JWT_SECRET); every sign writes a durable audit entry; PulseVault ${latency(pv)}; reference ${latency(ref)}`,
    },
    {
      scenario: "4′. The same, straight to the sign function's port (no local gateway)",
      pulsevault: ok(direct) ? { value: direct.requestsPerSecond, unit: 'req/s' } : null,
      reference: ok(ref) ? { value: ref.requestsPerSecond, unit: 'req/s' } : null,
      referenceName: 'bare Node HTTP server answering the same JSON',
      better: 'higher',
      commands: [direct.command, ref.command],
      note: `PulseVault ${latency(direct)}`,
    },
  ];
}
