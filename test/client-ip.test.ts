/**
 * Whose address an entry records (shared/platform/http.ts clientIp): X-Forwarded-For only from a
 * trusted proxy, read right to left. Real HTTP over loopback; the untrusted peer is 127.0.0.2
 * (the whole of 127/8 is loopback on Linux, so a client can bind to it), the trusted one 127.0.0.1.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anonymizeIp } from '../shared/audit/ip.js';
import { clientIp } from '../shared/platform/http.js';
import { loadConfig } from '../shared/platform/config.js';

const TRUSTED = ['127.0.0.1/32', '::1', '10.244.0.0/16'];
let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer((req, res) => res.end(clientIp(req, TRUSTED)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

/** The address the server names for a request from `from` with these X-Forwarded-For headers. */
function seenAs(from: string, forwarded: string[] | null): Promise<string> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = forwarded ? { 'X-Forwarded-For': forwarded } : {};
    const req = request({ host: '127.0.0.1', port, localAddress: from, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body));
    });
    req.on('error', reject).end();
  });
}

describe('client address behind trusted proxies', () => {
  it.each([
    // [peer, X-Forwarded-For header(s), recorded]
    ['127.0.0.2', ['203.0.113.77'], '127.0.0.2'], // an untrusted peer's claim is ignored
    ['127.0.0.2', ['not-an-ip'], '127.0.0.2'],
    ['127.0.0.2', null, '127.0.0.2'],
    ['127.0.0.1', null, '127.0.0.1'],
    ['127.0.0.1', ['198.51.100.4'], '198.51.100.4'], // one trusted proxy in front of the client
    ['127.0.0.1', ['203.0.113.77, 198.51.100.4'], '198.51.100.4'], // the client's own claim (left) is ignored
    ['127.0.0.1', ['203.0.113.77, 198.51.100.4, 10.244.3.7:41000'], '198.51.100.4'], // ingress → edge → gateway
    ['127.0.0.1', ['203.0.113.77', '198.51.100.4, 10.244.3.7'], '198.51.100.4'], // repeated headers are one list
    ['127.0.0.1', ['[2001:db8::5]:443, [::1]:9000'], '2001:db8::5'],
    ['127.0.0.1', ['::ffff:198.51.100.9'], '198.51.100.9'],
    ['127.0.0.1', ['198.51.100.4, not-an-ip'], '127.0.0.1'], // unparsable: back to the peer
    ['127.0.0.1', ['203.0.113.77, 10.1'], '127.0.0.1'], // classful shorthand is no address
    ['127.0.0.1', ['10.244.0.9, 10.244.0.8'], '10.244.0.9'], // all trusted: the leftmost
  ] as const)('from %s with X-Forwarded-For %j → %s', async (from, forwarded, expected) => {
    expect(await seenAs(from, forwarded ? [...forwarded] : null)).toBe(expected);
  });

  it('what the audit stores is the anonymised client, never the spoofed address', async () => {
    expect(anonymizeIp(await seenAs('127.0.0.2', ['203.0.113.77']))).toBe('127.0.0.0');
    expect(anonymizeIp(await seenAs('127.0.0.1', ['203.0.113.77, 198.51.100.4']))).toBe('198.51.100.0');
  });

  it('TRUST_PROXY is a list of CIDRs or addresses; booleans and garbage are refused', () => {
    const load = (v: string) => loadConfig({ HMAC_SECRET: 'x'.repeat(32), TRUST_PROXY: v }, { secretsDir: '/nonexistent' }).trustedProxies;
    expect(load('10.244.0.0/16, 127.0.0.1,::1')).toEqual(['10.244.0.0/16', '127.0.0.1', '::1']);
    expect(load('')).toEqual([]);
    for (const bad of ['true', '10.0.0.0/33', 'ingress', '10.1']) expect(() => load(bad), bad).toThrow(/TRUST_PROXY must be a comma-separated list/);
  });
});
