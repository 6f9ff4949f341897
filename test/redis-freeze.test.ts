/**
 * Redis frozen (SIGSTOP: connections stay open, nothing answers — a stalled
 * node, a long fork, a VM pause): every request path of the real local stack
 * answers within its deadline, with success or a clear 503, and works again
 * once Redis thaws.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MediaStore } from '../shared/video/store.js';
import { makeClip } from './helpers/media.js';
import { startStack, type TestStack, STACK_START_DEADLINE_MS } from './helpers/stack.js';
import { createUpload, patch, TUS, uploadIdOf } from './helpers/uploads.js';
import { waitFor } from './helpers/wait.js';

const JWT_SECRET = 'freeze-test-jwt-secret-0123456789abcdef0123';
/** Redis commands give up after REDIS_COMMAND_TIMEOUT_MS, audit acks after AUDIT_ACK_TIMEOUT_MS; a request makes a few in turn. */
const COMMAND_TIMEOUT_MS = 500;
/** 10× the slowest path's quiet time (sign and metadata: two command timeouts, ~1 s), so a loaded machine passes; a hang still fails. */
const DEADLINE_MS = 10 * 2 * COMMAND_TIMEOUT_MS;

let stack: TestStack;
let clip: Buffer;
let bearer: string;
const tmp = mkdtempSync(path.join(tmpdir(), 'pv-freeze-'));

const auth = () => ({ Authorization: `Bearer ${bearer}` });

async function finalize(uploadId: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${stack.url}/uploads/finalize`, {
    method: 'POST',
    ...(signal ? { signal } : {}),
    headers: { ...auth(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ uploadId, filename: 'visit.mp4', metadata: {} }),
  });
}

async function sign(videoId: string, file: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${stack.url}/media/sign`, { method: 'POST', headers: { ...auth(), 'Content-Type': 'application/json' }, body: JSON.stringify({ videoId, path: file }), ...(signal ? { signal } : {}) });
}

async function uploaded(): Promise<string> {
  const url = await createUpload(`${stack.url}/uploads`, clip.length, auth());
  expect((await patch(url, 0, clip)).status).toBe(204);
  return url;
}

beforeAll(async () => {
  [stack, clip] = await Promise.all([
    startStack({
      env: {
        AUTH_JWT_SECRET: JWT_SECRET,
        RENDITIONS: '240p',
        FFMPEG_PRESET: 'ultrafast',
        REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
        AUDIT_ACK_TIMEOUT_MS: '1000',
      },
    }),
    makeClip(path.join(tmp, 'clip.mp4'), { seconds: 1 }).then((f) => readFileSync(f)),
  ]);
  bearer = await new SignJWT({ roles: ['uploader'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('clinician-7').setExpirationTime('10m').sign(new TextEncoder().encode(JWT_SECRET));
}, STACK_START_DEADLINE_MS + 60_000);

afterAll(async () => {
  stack?.redis.signal('SIGCONT');
  await stack?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

it('answers every request path within its deadline while Redis is frozen, and recovers when it thaws', async () => {
  // A transcoded video to read, a finished upload to finalize, a started one to resume.
  const first = await finalize(uploadIdOf(await uploaded()));
  expect(first.status).toBe(200);
  const { videoId } = (await first.json()) as { videoId: string };
  const store = new MediaStore(path.join(stack.mediaRoot, 'videos'));
  await waitFor(async () => (await store.read(videoId)).status === 'transcoded', 60_000, 'the video to be transcoded', 100);
  const playlist = (await (await sign(videoId, 'hls/master.m3u8')).json()) as { url: string };
  const pendingFinalize = uploadIdOf(await uploaded());
  const partial = await createUpload(`${stack.url}/uploads`, clip.length, auth());

  stack.redis.signal('SIGSTOP');
  try {
    // Each call is cut off at the deadline (a hang reads as "no answer"), and all run at once: the freeze is short.
    const signal = () => AbortSignal.timeout(DEADLINE_MS);
    const paths: Record<string, () => Promise<Response>> = {
      'tus POST': () => fetch(`${stack.url}/uploads`, { method: 'POST', headers: { ...TUS, ...auth(), 'Upload-Length': String(clip.length) }, signal: signal() }),
      'tus HEAD': () => fetch(partial, { method: 'HEAD', headers: TUS, signal: signal() }),
      'tus PATCH': () => patch(partial, 0, clip.subarray(0, 1024), {}, signal()),
      finalize: () => finalize(pendingFinalize, signal()),
      sign: () => sign(videoId, 'hls/master.m3u8', signal()),
      metadata: () => fetch(`${stack.url}/media/videos/${videoId}/metadata?${new URL(playlist.url, stack.url).searchParams}`, { signal: signal() }),
      stream: () => fetch(`${stack.url}${playlist.url}`, { signal: signal() }),
    };
    const answers = await Promise.all(
      Object.entries(paths).map(async ([name, call]) => {
        const started = Date.now();
        try {
          const res = await call();
          const error = res.status === 503 && res.headers.get('content-type')?.includes('json') ? ((await res.json()) as { error: string }).error : null;
          return { name, status: res.status as number | string, ms: Date.now() - started, error };
        } catch (err) {
          return { name, status: `no answer (${(err as Error).name})`, ms: Date.now() - started, error: null };
        }
      }),
    );
    for (const a of answers) {
      expect(a.ms, `${a.name} answered in ${a.ms} ms`).toBeLessThan(DEADLINE_MS);
      expect([200, 201, 204, 503], `${a.name} answered ${a.status}`).toContain(a.status);
    }
    // The JSON paths say why; tus answers 503 in its own plain-text way.
    for (const a of answers.filter((x) => x.status === 503 && !x.name.startsWith('tus'))) expect(a.error, a.name).toMatch(/_unavailable$/);
    // Health is active: the frozen Redis shows as degraded (still 200: a restart would not thaw it), also at once.
    for (const url of [`${stack.url}/`, `${stack.url}/function/sign/_/health`, `${stack.url}/function/stream/_/health`]) {
      const started = Date.now();
      const res = await fetch(url, { signal: signal() });
      expect(res.status, url).toBe(200);
      expect(((await res.json()) as { status: string; redis: string }), url).toMatchObject({ status: 'degraded', redis: 'down' });
      expect(Date.now() - started, url).toBeLessThan(DEADLINE_MS);
    }
  } finally {
    stack.redis.signal('SIGCONT');
  }

  // Thawed: everything that was refused can simply be retried.
  await waitFor(async () => (await sign(videoId, 'hls/master.m3u8')).status === 200, 15_000, 'sign to work again', 200);
  const retried = await waitFor(async () => {
    const res = await finalize(pendingFinalize);
    return res.status === 200 ? res : null;
  }, 15_000, 'the refused finalize to succeed on retry', 200);
  const { videoId: second } = (await retried.json()) as { videoId: string };
  await waitFor(async () => (await store.read(second)).status === 'transcoded', 60_000, 'the retried video to be transcoded', 100);
  const head = await fetch(partial, { method: 'HEAD', headers: TUS });
  expect(head.status).toBe(200);
});
