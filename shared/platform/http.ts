/** Small HTTP helpers shared by the functions and the local gateway. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import ipaddr from 'ipaddr.js';
import { BadRequestError, PayloadTooLargeError } from './errors.js';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(payload),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

/** Read a JSON request body of at most `limit` bytes. */
export async function readJsonBody(req: IncomingMessage, limit = 64 * 1024): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new BadRequestError('Content-Type must be application/json', 'unsupported_content_type');
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new PayloadTooLargeError(`request body exceeds ${limit} bytes`);
  const body = await readBody(req, limit);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new BadRequestError('request body is not valid JSON', 'invalid_json');
  }
}

/**
 * The whole (small) body. Plain 'data'/'end' listeners: `for await` over the
 * request costs ~10 % of a sign request in promise and end-of-stream machinery.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (err: Error | null) => {
      req.off('data', onData).off('end', onEnd).off('error', onClose).off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) settle(new PayloadTooLargeError(`request body exceeds ${limit} bytes`));
      else chunks.push(chunk);
    };
    const onEnd = () => settle(null);
    // The client went away before the end of its body (an 'error' here is the connection reset).
    const onClose = () => settle(new BadRequestError('the request body ended early', 'incomplete_body'));
    req.on('data', onData).on('end', onEnd).on('error', onClose).on('close', onClose);
  });
}

/**
 * An IP address in a strict textual form (what a socket or a proxy reports), IPv4-mapped IPv6
 * as the IPv4 it carries, a zone id dropped; null for anything else (ipaddr.isValid would also
 * take classful shorthands like `10.1`).
 */
export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  const raw = text.trim().replace(/%.*$/, ''); // a zone id (fe80::1%eth0) names a local interface, not a host
  if (!ipaddr.IPv4.isValidFourPartDecimal(raw) && !ipaddr.IPv6.isValid(raw)) return null;
  return ipaddr.process(raw);
}

/** Trusted proxy lists (config.trustedProxies), parsed once each. */
const parsedProxies = new WeakMap<readonly string[], [ipaddr.IPv4 | ipaddr.IPv6, number][]>();

function trusts(trustedProxies: readonly string[], addr: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  let ranges = parsedProxies.get(trustedProxies);
  if (!ranges) {
    ranges = trustedProxies.map((e) => {
      if (e.includes('/')) return ipaddr.parseCIDR(e);
      const one = ipaddr.process(e);
      return [one, one.kind() === 'ipv4' ? 32 : 128];
    });
    parsedProxies.set(trustedProxies, ranges);
  }
  return ranges.some(([range, bits]) => range.kind() === addr.kind() && addr.match(range, bits));
}

/**
 * The caller's address. X-Forwarded-For is believed only from a trusted proxy
 * (TRUST_PROXY), and then read right to left: each proxy appends the address it
 * was reached from, so the first hop that is not a trusted proxy is the client;
 * what a client wrote further left is its own claim and ignored. A hop that is
 * not an address (`not-an-ip`, garbage) ends the walk at the peer: nothing after
 * it can be believed. Hops may carry a port (`ip:port`, `[v6]:port`, as the
 * gateways write them).
 */
export function clientIp(req: IncomingMessage, trustedProxies: readonly string[]): string {
  const peer = parseIp(stripPort(req.socket.remoteAddress ?? ''));
  if (!peer) return '';
  if (!trusts(trustedProxies, peer)) return peer.toString();
  const header = req.headers['x-forwarded-for'];
  if (!header) return peer.toString();
  const hops = (Array.isArray(header) ? header.join(',') : header).split(',');
  let client = peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = parseIp(stripPort(hops[i]!.trim()));
    if (!hop) return peer.toString();
    client = hop;
    if (!trusts(trustedProxies, hop)) break;
  }
  return client.toString();
}

function stripPort(addr: string): string {
  if (addr.startsWith('[')) return addr.slice(1, addr.indexOf(']'));
  const colons = addr.split(':').length - 1;
  if (colons === 1) return addr.slice(0, addr.indexOf(':'));
  return addr;
}

/** Path of the request URL, without the query string. */
export function requestPath(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** How much of a refused request's body is read and dropped to keep its connection (see discardRequestBody). */
export const DISCARD_LIMIT = { bytes: 16 * 1024 * 1024, ms: 5_000, lingerMs: 2_000 };

/**
 * Once an answer has gone out before the request body was read (an early refusal: 409, 423, 429,
 * 4xx of ours), read the rest and drop it, so the connection stays usable: the media edge and the
 * gateway keep their upstream connections alive and send the next request on this one. Answering
 * `Connection: close` instead makes the sender's next write fail (EPIPE/RST), often before it has
 * parsed our answer (a 502 at the gateway, a stalled pooled connection at nginx). Bounded: past
 * `limit.bytes` or `limit.ms` the connection is half-closed (FIN, the answer already sent stays
 * readable) and, after `limit.lingerMs` more of dropping, destroyed.
 */
export function discardRequestBody(req: IncomingMessage, limit = DISCARD_LIMIT): void {
  if (req.complete || req.destroyed) return;
  const socket = req.socket;
  let left = limit.bytes;
  let linger: NodeJS.Timeout | undefined;
  const stop = () => {
    if (linger) return;
    socket.end();
    linger = setTimeout(() => socket.destroy(), limit.lingerMs).unref();
  };
  const timer = setTimeout(stop, limit.ms).unref();
  const onData = (chunk: Buffer) => {
    left -= chunk.length;
    if (left < 0) stop();
  };
  const done = () => {
    clearTimeout(timer);
    req.off('data', onData);
  };
  req.on('data', onData).once('end', done).once('close', done);
  socket.once('close', () => clearTimeout(linger));
  req.resume();
}
