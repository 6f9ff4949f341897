/**
 * The system under test: the real local stack (`node dist/services/devstack/main.js`,
 * what `npm start` runs) with a scratch MEDIA_ROOT and its own redis-server
 * (REDIS_URL names a free port, so the devstack starts a private Redis there,
 * as `npm start` does on a machine without one). Logs go to a file at the
 * production level (info), so the harness does not pay for reading them.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import * as tus from 'tus-js-client';
import { freePort } from '../../services/devstack/supervisor.js';
import { childPids } from './nginx.js';
import { ROOT, run } from './tools.js';

/** The uploading user: the subject of the JWT every request carries, as in production. */
const BENCH_USER = 'bench-user';

export interface BenchStack {
  url: string;
  mediaRoot: string;
  videoDir: string;
  auditDir: string;
  redisUrl: string;
  /** The audit writer's direct intake, as the stack's functions are given it (AUDIT_WRITER_URL). */
  auditWriterUrl: string;
  /** The secret the intake and its clients prove they hold (AUDIT_INTAKE_KEY). */
  auditIntakeKey: string;
  auditSigningKey: string;
  /** The stack's HMAC_SECRET: record() keys user pseudonyms with it (shared/audit/subject.ts). */
  hmacSecret: string;
  /** `Bearer <JWT>` for BENCH_USER with the uploader role (HS256, AUTH_JWT_SECRET of this run). */
  authorization: string;
  logFile: string;
  /** Whether this build runs the transcoding pipeline (the queue connector service). */
  hasTranscoder(): Promise<boolean>;
  /** pid of a function's first replica, from the gateway's health document. */
  functionPid(name: string): Promise<number>;
  /** pids of every replica of a function. */
  functionPids(name: string): Promise<number[]>;
  /** pid of the media edge's nginx master (under its wrapper), or null when the stack runs without the edge. */
  edgeNginxPid(): Promise<number | null>;
  /**
   * Base URL of a function's first replica, bypassing the local gateway (which
   * OpenFaaS replaces in production): the port it listens on, from `ss`.
   */
  functionUrl(name: string): Promise<string>;
  /** tus-js-client upload of a file in `chunkSize` chunks, through the gateway or to `base` (a function's own URL); resolves with the upload id. */
  upload(file: string, chunkSize: number, base?: string): Promise<string>;
  /** POST /uploads/finalize; resolves with the new video id. */
  finalize(uploadId: string, filename: string): Promise<string>;
  /** POST /media/sign; resolves with the signed path (`/media/videos/<id>/<path>?token=…`). */
  sign(videoId: string, mediaPath: string): Promise<string>;
  /** How the stack process ended, if it ended before stop() (a crash, or a signal from outside). */
  unexpectedExit(): string | null;
  stop(): Promise<void>;
}

interface Health {
  status: string;
  functions: Record<string, { replicas: { pid: number | null }[] }>;
  services: Record<string, { pid?: number | null }>;
}

/** `env`: settings on top of the defaults (LOCAL_REPLICAS, …) for a scenario that needs a stack of its own. */
export async function startBenchStack(scratch: string, env: Record<string, string> = {}): Promise<BenchStack> {
  const mediaRoot = path.join(scratch, 'media');
  mkdirSync(mediaRoot, { recursive: true });
  const port = await freePort();
  const redisUrl = `redis://127.0.0.1:${await freePort()}`;
  const auditIntakePort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const auditSigningKey = randomBytes(32).toString('hex');
  const hmacSecret = randomBytes(32).toString('hex');
  const auditIntakeKey = randomBytes(32).toString('hex');
  const jwtSecret = randomBytes(32).toString('base64url');
  const jwt = await new SignJWT({ roles: ['uploader'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(BENCH_USER)
    .setIssuedAt()
    .setExpirationTime('6h')
    .sign(new TextEncoder().encode(jwtSecret));
  const authHeader = { Authorization: `Bearer ${jwt}` };
  const logFile = path.join(scratch, 'stack.log');
  const log = openSync(logFile, 'a');
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/services/devstack/main.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_ENV: 'development',
      LOG_LEVEL: 'info',
      HMAC_SECRET: hmacSecret,
      AUDIT_SIGNING_KEY: auditSigningKey,
      AUTH_JWT_SECRET: jwtSecret,
      SECRETS_DIR: path.join(scratch, 'no-secrets'),
      PORT: String(port),
      HOST: '127.0.0.1',
      MEDIA_ROOT: mediaRoot,
      REDIS_URL: redisUrl,
      AUDIT_INTAKE_PORT: String(auditIntakePort),
      AUDIT_INTAKE_KEY: auditIntakeKey,
      ...env,
    },
    stdio: ['ignore', log, log],
  });
  let stopping = false;
  let unexpected: string | null = null;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      if (!stopping) unexpected = signal ? `killed by ${signal}` : `exited with ${code}`;
      resolve();
    }),
  );

  const health = async (): Promise<Health> => (await (await fetch(`${url}/`)).json()) as Health;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the local stack exited with ${child.exitCode}; see ${logFile}:\n${readFileSync(logFile, 'utf8').slice(-3000)}`);
    if ((await health().catch(() => null))?.status === 'ok') break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the local stack was not ready within 120 s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  async function functionPids(name: string): Promise<number[]> {
    const pids = ((await health()).functions[name]?.replicas ?? []).map((r) => r.pid);
    if (pids.length === 0 || pids.some((pid) => !pid)) throw new Error(`the health document names no pid for some replica of ${name}`);
    return pids as number[];
  }

  async function functionPid(name: string): Promise<number> {
    return (await functionPids(name))[0]!;
  }

  async function postJson(route: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(`${url}${route}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeader }, body: JSON.stringify(body) });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${route} answered ${res.status}: ${JSON.stringify(json)}`);
    return json;
  }

  return {
    url,
    mediaRoot,
    videoDir: path.join(mediaRoot, 'videos'),
    auditDir: path.join(mediaRoot, 'audit'),
    redisUrl,
    auditWriterUrl: `tcp://127.0.0.1:${auditIntakePort}`,
    auditIntakeKey,
    auditSigningKey,
    hmacSecret,
    authorization: authHeader.Authorization,
    logFile,
    async hasTranscoder() {
      return 'queue-connector' in (await health()).services;
    },
    functionPid,
    functionPids,
    async edgeNginxPid() {
      const wrapper = (await health()).services['media-edge']?.pid;
      return wrapper ? ((await childPids(wrapper))[0] ?? null) : null;
    },
    async functionUrl(name) {
      const pid = await functionPid(name);
      const { stdout } = await run('ss', ['-Hltnp']);
      const line = stdout.split('\n').find((l) => l.includes(`pid=${pid},`));
      const port = line && /127\.0\.0\.1:(\d+)/.exec(line)?.[1];
      if (!port) throw new Error(`no listening port found for ${name} (pid ${pid})`);
      return `http://127.0.0.1:${port}`;
    },
    upload(file, chunkSize, base = url) {
      return new Promise((resolve, reject) => {
        const upload = new tus.Upload(createReadStream(file), {
          endpoint: `${base}/uploads`,
          chunkSize,
          retryDelays: null,
          storeFingerprintForResuming: false,
          headers: authHeader,
          metadata: { filetype: 'video/mp4' },
          onError: reject,
          onSuccess: () => resolve(new URL(upload.url!).pathname.split('/').pop()!),
        });
        upload.start();
      });
    },
    async finalize(uploadId, filename) {
      return (await postJson('/uploads/finalize', { uploadId, filename })).videoId as string;
    },
    async sign(videoId, mediaPath) {
      return (await postJson('/media/sign', { videoId, path: mediaPath })).url as string;
    },
    unexpectedExit: () => unexpected,
    async stop() {
      stopping = true;
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
