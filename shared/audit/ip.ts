/**
 * Client IPs are stored in the audit log only anonymised: IPv4 truncated to its
 * /24 (a.b.c.0), IPv6 to its /48. An IPv4-mapped IPv6 address (::ffff:a.b.c.d)
 * is treated as the IPv4 address it carries. Parsing is ipaddr.js's (through
 * platform/http.ts parseIp), which knows every textual form (zero compression,
 * embedded IPv4, zone ids).
 */
import ipaddr from 'ipaddr.js';
import { LRUCache } from 'lru-cache';
import { parseIp } from '../platform/http.js';

const IPV4_PREFIX = 24;
const IPV6_PREFIX = 48;

function zeroHostBits(bytes: number[], prefix: number): number[] {
  return bytes.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
}

/** Recent answers: a client's requests come in runs, and parsing was a tenth of a record() call's CPU under load. */
const anonymised = new LRUCache<string, { value: string | null }>({ max: 10_000 });

/** The anonymised form of `ip`, or null when it is empty or not an IP address. */
export function anonymizeIp(ip: string | null | undefined): string | null {
  if (!ip) return null;
  let known = anonymised.get(ip);
  if (!known) anonymised.set(ip, (known = { value: anonymise(ip) }));
  return known.value;
}

function anonymise(ip: string): string | null {
  const addr = parseIp(ip);
  if (!addr) return null;
  if (addr.kind() === 'ipv4') {
    return ipaddr.fromByteArray(zeroHostBits(addr.toByteArray(), IPV4_PREFIX)).toString();
  }
  return ipaddr.fromByteArray(zeroHostBits(addr.toByteArray(), IPV6_PREFIX)).toString();
}
