/**
 * The accounting of disclosures on the real local stack (gateway, functions, audit
 * writer, media edge when nginx is installed, Redis): three subjects sign and play a
 * video through the edge, one playback is refused; GET /admin/audit/report lists exactly
 * the video's entries on disk, in JSON and CSV, a subject's report exactly that
 * subject's, non-admins get 403 (audited), and a tampered day is reported as a break.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditReport } from '../shared/audit/report.js';
import { subjectPseudonym } from '../shared/audit/subject.js';
import { readAuditEntries, type AuditLine } from './helpers/audit.js';
import { makeVideo } from './helpers/delivery-video.js';
import { startStack, TEST_HMAC_SECRET, type TestStack } from './helpers/stack.js';
import { waitFor } from './helpers/wait.js';

const JWT_SECRET = 'audit-report-test-jwt-secret-0123456789abcdef';
const jwt = (sub: string, roles: string[]) =>
  new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
/** The owner (uploader) and two admins, subjects as identity providers issue them. */
const VIEWERS = [
  { sub: 'owner-1', roles: ['uploader'] },
  { sub: 'dr.ana@example.org', roles: ['admin'] },
  { sub: 'CONTOSO\\nurse', roles: ['admin'] },
];
const ADMIN = VIEWERS[1]!;

let stack: TestStack;
let videoId: string;
let auditDir: string;

const authHeader = async (who: { sub: string; roles: string[] }) => ({ Authorization: `Bearer ${await jwt(who.sub, who.roles)}` });

async function report(query: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${stack.url}/admin/audit/report?${query}`, { headers: { ...(await authHeader(ADMIN)), ...headers } });
}

/** The video's entries on disk, as ids (category:seq). */
const idsOf = (lines: { category: string; seq: unknown }[]) => lines.map((l) => `${l.category}:${String(l.seq)}`).sort();

beforeAll(async () => {
  stack = await startStack({ env: { AUTH_JWT_SECRET: JWT_SECRET } });
  auditDir = path.join(stack.mediaRoot, 'audit');
  ({ videoId } = await makeVideo(path.join(stack.mediaRoot, 'videos'), { owner: 'owner-1' }));
  for (const viewer of VIEWERS) {
    const signed = await fetch(`${stack.url}/media/sign`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await authHeader(viewer)) },
      body: JSON.stringify({ videoId, path: 'hls/master.m3u8' }),
    });
    expect(signed.status, viewer.sub).toBe(200);
    const { url } = (await signed.json()) as { url: string };
    const master = await fetch(new URL(url, stack.url));
    expect(master.status).toBe(200);
    const variant = await fetch(new URL(url.replace('/hls/master.m3u8?', '/hls/240p.m3u8?'), stack.url));
    expect(variant.status).toBe(200);
    // The init segment and every media segment: files nginx sends under one grant.
    const playlist = await variant.text();
    const files = [...playlist.matchAll(/URI="([^"]+)"/g)].map((m) => m[1]!).concat(playlist.split('\n').filter((l) => l !== '' && !l.startsWith('#')));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const file of files) {
      const segment = await fetch(new URL(file, new URL(url.replace('/hls/master.m3u8?', '/hls/240p.m3u8?'), stack.url)));
      expect(segment.status, file).toBe(200);
      await segment.arrayBuffer();
    }
  }
  // One playback refused: a token cut short.
  const refused = await fetch(`${stack.url}/media/videos/${videoId}/hls/master.m3u8?token=v1.forged`);
  expect(refused.status).toBe(403);
  await waitFor(() => readAuditEntries(auditDir).filter((e) => e.videoId === videoId && e.action === 'stream').length >= 4, 60_000, 'the playbacks audited');
}, 180_000);

afterAll(async () => {
  await stack?.stop();
});

describe('GET /admin/audit/report', () => {
  it('lists exactly the video entries on disk, the three grants by subject and the refusal, in JSON and in CSV', async () => {
    const res = await report(`videoId=${videoId}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    const body = (await res.json()) as AuditReport;
    expect(body.breaks).toEqual([]);
    const onDisk = readAuditEntries(auditDir).filter((e) => e.videoId === videoId && e.category === 'access');
    const reported = body.lines.filter((l) => l.category === 'access');
    expect(idsOf(reported)).toEqual(idsOf(onDisk as (AuditLine & { seq: number })[]));
    const signs = reported.filter((l) => l.action === 'sign');
    expect(signs.map((l) => l.subject).sort()).toEqual(VIEWERS.map((v) => subjectPseudonym(TEST_HMAC_SECRET, v.sub)).sort());
    expect(signs.every((l) => l.outcome === 'granted' && !!l.requestId && l.clientIp === '127.0.0.0')).toBe(true);
    const denied = reported.filter((l) => l.outcome === 'denied');
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ action: 'stream', videoId, resource: 'hls/master.m3u8' });
    // Each line says what of the video: the scope signed, the playlist or the rendition's files granted.
    expect(signs.every((l) => l.resource === 'hls/')).toBe(true);
    const streamed = new Set(reported.filter((l) => l.action === 'stream' && l.outcome === 'granted').map((l) => l.resource));
    expect(streamed).toContain('hls/master.m3u8');
    expect(streamed).toContain('hls/240p.m3u8');
    expect([...streamed].every((r) => typeof r === 'string' && r.startsWith('hls/'))).toBe(true);
    // Through the media edge, playlists are audited per request and segments per grant (fewer entries than requests).
    expect(reported.filter((l) => l.action === 'stream' && l.outcome === 'granted').length).toBeGreaterThanOrEqual(2 * VIEWERS.length);

    const csv = await report(`videoId=${videoId}&category=access`, { Accept: 'text/csv' });
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const rows = (await csv.text()).trim().split('\r\n');
    expect(rows[0]).toBe('record,time,category,action,outcome,reason,subject,role,video_id,resource,client_ip,request_id,seq,file,line,detail');
    expect(rows.slice(1).map((r) => `access:${r.split(',')[12]}`).sort()).toEqual(idsOf(reported));
    expect(rows.some((r) => r.includes(',stream,denied,') && r.includes(`,${videoId},hls/master.m3u8,`))).toBe(true);
  });

  it("a subject's report matches the entries that subject made; the raw subject is in no file", async () => {
    const res = await report(`subject=${encodeURIComponent(ADMIN.sub)}`);
    const body = (await res.json()) as AuditReport;
    const pseudonym = subjectPseudonym(TEST_HMAC_SECRET, ADMIN.sub);
    const onDisk = readAuditEntries(auditDir).filter((e) => (e.actor as { userId?: string } | null)?.userId === pseudonym);
    // Its own report requests are audited before they are answered: this one is there too.
    expect(idsOf(body.lines)).toEqual(idsOf(onDisk as (AuditLine & { seq: number })[]));
    expect(body.lines.filter((l) => l.action === 'sign').map((l) => l.videoId)).toEqual([videoId]);
    expect(body.lines.some((l) => l.category === 'admin' && l.action === 'audit.report.subject')).toBe(true);
    for (const f of readdirSync(auditDir, { recursive: true }) as string[]) {
      if (/\.(log|idx|json)$/.test(f)) expect(readFileSync(path.join(auditDir, f), 'latin1').includes('dr.ana'), f).toBe(false);
    }
  });

  it('refuses non-admins (403, audited as a denied admin entry) and bad input (400), changing nothing', async () => {
    const owner = await fetch(`${stack.url}/admin/audit/report?videoId=${videoId}`, { headers: await authHeader(VIEWERS[0]!) });
    expect(owner.status).toBe(403);
    expect(((await owner.json()) as { error: string }).error).toBeTruthy();
    await waitFor(
      () => readAuditEntries(auditDir).some((e) => e.category === 'admin' && e.outcome === 'denied' && e.reason === 'not_admin'),
      30_000,
      'the refusal audited',
    );
    const anonymous = await fetch(`${stack.url}/admin/audit/report?videoId=${videoId}`);
    expect(anonymous.status).toBe(401);
    for (const query of ['videoId=not-a-uuid', '', `videoId=${videoId}&from=yesterday`, `videoId=${videoId}&color=red`, `videoId=${videoId}&category=nope`]) {
      const bad = await report(query);
      expect(bad.status, query).toBe(400);
      expect(bad.headers.get('content-type')).toMatch(/application\/json/);
    }
  });

  it('reports a tampered day as a break (day, category, line) and withholds what follows it', async () => {
    const today = new Date().toISOString().slice(0, 10);
    const file = path.join(auditDir, `access-${today}.log`);
    const lines = readFileSync(file, 'utf8').split('\n');
    const target = lines.findIndex((l) => l.includes(videoId) && l.includes('"action":"sign"'));
    lines[target] = lines[target]!.replace('"granted"', '"denied"');
    writeFileSync(file, lines.join('\n'));
    const body = (await (await report(`videoId=${videoId}`)).json()) as AuditReport;
    expect(body.breaks).toContainEqual(expect.objectContaining({ day: today, category: 'access', file: `access-${today}.log`, line: target + 1, kind: 'modified' }));
    expect(body.lines.some((l) => l.category === 'access' && l.line >= target + 1)).toBe(false);
  });
});
