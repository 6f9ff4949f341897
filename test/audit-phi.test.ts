/**
 * No PHI in audit entries or logs. Runs the public flow (upload → finalize →
 * sign → stream → metadata) through the real local stack with a distinctive
 * title, description and filename, then scans every audit file and every line
 * the stack's processes printed for them.
 *
 * The flow is driven as far as the functions in this branch implement it:
 * a step answered 501 (not implemented yet) still passes through the gateway,
 * the runtime's request logging and error mapping. Once the functions exist the
 * same scan covers their handlers and audit calls.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../shared/audit.js';
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/log.js';
import { createRedis } from '../shared/redis.js';
import { findPhi } from './helpers/phi.js';
import { startStack, TEST_AUDIT_KEY, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

const TITLE = 'Zebulon Quackenbush knee arthroscopy';
const DESCRIPTION = 'Follow-up for patient Philomena Vandersloot, MRN 4471923';
const FILENAME = 'quackenbush-vandersloot-mri.mp4';
const PHI = [TITLE, DESCRIPTION, FILENAME];

let stack: TestStack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('no PHI in audit entries or logs', () => {
  it('the upload → finalize → sign → stream → metadata flow leaves no title, description or filename behind', async () => {
    const statuses: Record<string, number> = {};
    const created = await fetch(`${stack.url}/uploads`, {
      method: 'POST',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': '16',
        'Upload-Metadata': `filename ${b64(FILENAME)},filetype ${b64('video/mp4')},title ${b64(TITLE)},description ${b64(DESCRIPTION)}`,
      },
    });
    statuses.create = created.status;
    const location = created.headers.get('location');
    let uploadId = '00000000-0000-4000-8000-000000000000';
    if (location) {
      uploadId = location.split('/').pop()!;
      const patched = await fetch(new URL(location, stack.url), {
        method: 'PATCH',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
        body: Buffer.alloc(16, 7),
      });
      statuses.patch = patched.status;
    }
    const finalized = await fetch(`${stack.url}/uploads/finalize`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ uploadId, filename: FILENAME, userId: 'user-123', metadata: { title: TITLE, description: DESCRIPTION } }),
    });
    statuses.finalize = finalized.status;
    const videoId = ((await finalized.json().catch(() => ({}))) as { videoId?: string }).videoId ?? '11111111-2222-4333-8444-555555555555';
    const signed = await fetch(`${stack.url}/media/sign`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ videoId, path: 'hls/master.m3u8', expiresIn: 300 }),
    });
    statuses.sign = signed.status;
    const url = ((await signed.json().catch(() => ({}))) as { url?: string }).url ?? `/media/videos/${videoId}/hls/master.m3u8?token=none`;
    statuses.stream = (await fetch(new URL(url, stack.url))).status;
    const token = new URL(url, stack.url).searchParams.get('token') ?? 'none';
    statuses.metadata = (await fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${token}`)).status;
    expect(Object.keys(statuses)).toEqual(expect.arrayContaining(['create', 'finalize', 'sign', 'stream', 'metadata']));

    // An access entry as the stream function records it, through the stack's own audit writer, so the scan covers real audit files.
    const auditDir = path.join(stack.mediaRoot, 'audit');
    const config = loadConfig({ HMAC_SECRET: TEST_HMAC_SECRET, AUDIT_SIGNING_KEY: TEST_AUDIT_KEY, REDIS_URL: stack.redis.url, MEDIA_ROOT: stack.mediaRoot }, { secretsDir: '/nonexistent' });
    const conn = createRedis(config, { name: 'phi-test' });
    const audit = createAuditLog(config, conn, createLogger('phi-test', 'error'));
    try {
      await waitFor(
        () => audit.record({ category: 'access', action: 'stream', outcome: 'granted', videoId, clientIp: '192.0.2.10', requestId: 'phi-check', actor: { userId: 'user-123', role: 'clinician' } }).then(() => true, () => false),
        30_000,
        'the stack audit writer to record',
      );
    } finally {
      await audit.close();
      conn.disconnect();
    }
    expect(readdirSync(auditDir).some((f) => f.startsWith('access-'))).toBe(true);

    const { findings, filesScanned } = findPhi({ auditDir, output: stack.output() }, PHI);
    expect(filesScanned).toBeGreaterThan(0);
    expect(stack.output().length).toBeGreaterThan(0);
    expect(findings).toEqual([]);
  });

  it('the scan finds PHI when it is there (in any of its encodings)', () => {
    const auditDir = path.join(stack.mediaRoot, 'audit');
    const leaked = `{"msg":"finalized","meta":"title ${b64(TITLE)}"}\n{"msg":"upload","name":"${FILENAME}"}`;
    const { findings } = findPhi({ auditDir, output: leaked }, PHI);
    expect(findings).toEqual([
      { where: 'output', needle: TITLE, form: 'base64' },
      { where: 'output', needle: FILENAME, form: 'plain' },
      { where: 'output', needle: FILENAME, form: 'url-encoded' },
    ]);
  });
});
