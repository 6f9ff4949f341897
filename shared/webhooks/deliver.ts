/**
 * One delivery attempt: a POST of the signed event, through agents whose `lookup` applies the
 * allow-list (./allow-list.ts) to every address DNS returns, at connect time. An IP literal never
 * reaches `lookup` (Node connects to it directly), so it is checked before the request. No
 * redirect is followed (node:http never follows one): a 3xx is a failed attempt like any non-2xx.
 * The deadline covers the whole attempt, connect to last byte. Nothing of the URL but its origin,
 * and nothing of the body or the secret, goes into a result that may be logged.
 *
 * Every new connection resolves the name again and checks what came back (a pooled keep-alive
 * connection is to an address already checked): a name whose second answer differs from the
 * first (DNS rebinding) is judged on the second. The resolver is a parameter so a test can be the
 * DNS server; the check around it is the one production runs.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { failureCause } from '../platform/outbound.js';
import { addressAllowed, hostOf, httpPermitted, type AllowList } from './allow-list.js';
import type { SignedHeaders } from './signing.js';

export type AttemptOutcome = { ok: true; status: number } | { ok: false; status: number | null; reason: string };

/** Every address `hostname` resolves to (the system resolver: dns.lookup, as Node's own connect uses). */
export type Resolve = (hostname: string, options: LookupAllOptions) => Promise<LookupAddress[]>;

const systemResolve: Resolve = (hostname, options) =>
  new Promise((resolve, reject) => dnsLookup(hostname, options, (err, addresses) => (err ? reject(err) : resolve(addresses))));

function guardedLookup(list: Omit<AllowList, 'http'>, resolve: Resolve): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }).then((addresses) => {
      const allowed = addresses.filter((a) => addressAllowed(list, hostname, a.address));
      if (allowed.length === 0) {
        const refused = Object.assign(new Error(`${hostname} resolves only to addresses outside WEBHOOK_ALLOWED_HOSTS`), { code: 'EWEBHOOKREFUSED' });
        return callback(refused, '', 0);
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
      callback(null, allowed[0]!.address, allowed[0]!.family);
    }, (err: NodeJS.ErrnoException) => callback(err, '', 0));
  };
}

export class Deliverer {
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(
    private readonly list: AllowList,
    private readonly timeoutMs: number,
    /** Production: plain HTTP only to hosts on the list's HTTP part. */
    private readonly production: boolean,
    resolve: Resolve = systemResolve,
  ) {
    const lookup = guardedLookup(list, resolve);
    this.httpAgent = new http.Agent({ keepAlive: true, lookup });
    this.httpsAgent = new https.Agent({ keepAlive: true, lookup });
  }

  async attempt(rawUrl: string, headers: SignedHeaders, body: string): Promise<AttemptOutcome> {
    const url = new URL(rawUrl);
    const host = hostOf(url);
    if (ipaddr.isValid(host) && !addressAllowed(this.list, host, host)) return { ok: false, status: null, reason: 'address outside WEBHOOK_ALLOWED_HOSTS' };
    if (url.protocol === 'http:' && this.production && !httpPermitted(this.list, host)) return { ok: false, status: null, reason: 'https required' };
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise<AttemptOutcome>((resolve) => {
      const req = mod.request(
        url,
        {
          method: 'POST',
          agent: url.protocol === 'https:' ? this.httpsAgent : this.httpAgent,
          headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'PulseVault-Webhooks/1' },
          signal: AbortSignal.timeout(this.timeoutMs),
        },
        (res) => {
          const status = res.statusCode ?? 0;
          // The answer's body is not ours to keep: drain it so the connection can be reused.
          res.resume();
          res.on('end', () => {
            resolve(status >= 200 && status < 300 ? { ok: true, status } : { ok: false, status, reason: status >= 300 && status < 400 ? 'redirect not followed' : `HTTP ${status}` });
          });
          res.on('error', (err) => resolve({ ok: false, status, reason: failureCause(err) }));
        },
      );
      req.on('error', (err) => resolve({ ok: false, status: null, reason: err.name === 'AbortError' || err.name === 'TimeoutError' ? `timed out after ${this.timeoutMs} ms` : failureCause(err) }));
      req.end(body);
    });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
