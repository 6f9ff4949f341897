/**
 * No PHI in audit entries or logs. Runs the public flow (tus upload → finalize
 * → sign → stream → metadata) through the real local stack with a distinctive
 * title, description and filename, then scans every audit file and every line
 * the stack's processes printed for them.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAuditEntries } from './helpers/audit.js';
import { makeClip } from './helpers/media.js';
import { findPhi } from './helpers/phi.js';
import { startStack, type TestStack } from './helpers/stack.js';
import { createUpload, patch, uploadIdOf } from './helpers/uploads.js';

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
const json = { 'Content-Type': 'application/json' };

describe('no PHI in audit entries or logs', () => {
  it('the upload → finalize → sign → stream → metadata flow leaves no title, description or filename behind', async () => {
    const clip = readFileSync(await makeClip(path.join(mkdtempSync(path.join(tmpdir(), 'pv-phi-')), 'clip.mp4'), { seconds: 1 }));
    // The client's own tus metadata may carry PHI too (tus-js-client sends the file name).
    const meta = `filename ${b64(FILENAME)},filetype ${b64('video/mp4')},title ${b64(TITLE)},description ${b64(DESCRIPTION)}`;
    const location = await createUpload(`${stack.url}/uploads`, clip.length, { 'Upload-Metadata': meta });
    expect((await patch(location, 0, clip)).status).toBe(204);

    const finalized = await fetch(`${stack.url}/uploads/finalize`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ uploadId: uploadIdOf(location), filename: FILENAME, userId: 'user-123', metadata: { title: TITLE, description: DESCRIPTION } }),
    });
    expect(finalized.status).toBe(200);
    const { videoId } = (await finalized.json()) as { videoId: string };

    const signed = await fetch(`${stack.url}/media/sign`, { method: 'POST', headers: { ...json, 'X-PulseVault-User': 'user-123' }, body: JSON.stringify({ videoId, path: 'original.mp4', expiresIn: 300 }) });
    expect(signed.status, await signed.clone().text()).toBe(200);
    const url = new URL(((await signed.json()) as { url: string }).url, stack.url);
    const streamed = await fetch(url);
    expect(streamed.status).toBe(200);
    expect(Buffer.from(await streamed.arrayBuffer()).equals(clip)).toBe(true);
    const token = url.searchParams.get('token')!;
    // The owner sees the title (it is theirs); it must still not reach a log or the audit trail.
    const metadata = await fetch(`${stack.url}/media/videos/${videoId}/metadata?token=${token}`, { headers: { 'X-PulseVault-User': 'user-123' } });
    expect(metadata.status).toBe(200);

    const auditDir = path.join(stack.mediaRoot, 'audit');
    const entries = readAuditEntries(auditDir);
    for (const [category, action] of [['upload', 'finalize'], ['access', 'sign'], ['access', 'stream'], ['access', 'metadata']]) {
      expect(entries.some((e) => e.category === category && e.action === action && e.videoId === videoId), `${category}/${action} audited`).toBe(true);
    }

    const { findings, filesScanned } = findPhi({ auditDir, output: stack.output() }, PHI);
    expect(filesScanned).toBeGreaterThan(0);
    expect(stack.output()).toContain('"route":"GET /media/videos/:videoId/:path"'); // the stream request's own log line was scanned
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
