/**
 * The SSRF guard: where a webhook may go. `WEBHOOK_ALLOWED_HOSTS` lists hostnames
 * (`hooks.example.com`, or `*.example.com` for its subdomains) and CIDRs (`10.20.0.0/16`).
 * It is checked twice: when an endpoint is registered (its URL), and at connect time on every
 * address DNS returned (the agents' `lookup`, ./deliver.ts), so a name that later resolves
 * elsewhere (DNS rebinding) is refused where it matters.
 *
 * An address passes when it is inside a listed CIDR, or when it is a public unicast address of
 * a listed hostname. Loopback, link-local (169.254.169.254, the cloud metadata service),
 * private, unique-local, unspecified and other special ranges pass only through a CIDR that
 * names them: an allow-listed name resolving to 127.0.0.1 is refused. IPv4-mapped IPv6
 * (`::ffff:127.0.0.1`) is judged as the IPv4 address it is; decimal, octal and hex IPv4 forms
 * (`2130706433`) are parsed by the URL parser into the dotted address they mean first.
 */
import ipaddr from 'ipaddr.js';
import { BadRequestError } from '../platform/errors.js';

export interface AllowList {
  names: string[];
  cidrs: [ipaddr.IPv4 | ipaddr.IPv6, number][];
  /** Hosts (names or CIDRs of the same form) that may be reached over plain HTTP in production. */
  http: AllowList | null;
}

export class WebhookTargetRefused extends BadRequestError {
  constructor(reason: string) {
    super(`webhook target refused: ${reason}`, 'webhook_target_refused');
  }
}

function normalize(address: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  return address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() ? (address as ipaddr.IPv6).toIPv4Address() : address;
}

/** Entries as WEBHOOK_ALLOWED_HOSTS holds them (comma-separated); throws on an entry that is neither. */
export function parseAllowList(entries: readonly string[], httpEntries: readonly string[] = []): AllowList {
  const parse = (list: readonly string[]): Omit<AllowList, 'http'> => {
    const names: string[] = [];
    const cidrs: AllowList['cidrs'] = [];
    for (const raw of list) {
      const entry = raw.trim().toLowerCase();
      if (entry === '') continue;
      if (entry.includes('/')) {
        const [addr, bits] = ipaddr.parseCIDR(entry);
        cidrs.push([normalize(addr), addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() ? bits - 96 : bits]);
      } else if (ipaddr.isValid(entry)) {
        const addr = normalize(ipaddr.parse(entry));
        cidrs.push([addr, addr.kind() === 'ipv4' ? 32 : 128]);
      } else if (/^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(entry)) {
        names.push(entry);
      } else {
        throw new Error(`not a hostname or CIDR: ${JSON.stringify(raw)}`);
      }
    }
    return { names, cidrs };
  };
  return { ...parse(entries), http: httpEntries.length > 0 ? { ...parse(httpEntries), http: null } : null };
}

function nameListed(names: readonly string[], host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return names.some((n) => (n.startsWith('*.') ? h.endsWith(n.slice(1)) && h.length > n.length - 1 : h === n));
}

function inCidr(cidrs: AllowList['cidrs'], address: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  return cidrs.some(([range, bits]) => range.kind() === address.kind() && address.match(range, bits));
}

/** Whether `host` (the URL's name) may be reached at `address` (what DNS gave, or the literal). */
export function addressAllowed(list: Omit<AllowList, 'http'>, host: string, address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  const addr = normalize(ipaddr.parse(address));
  if (inCidr(list.cidrs, addr)) return true;
  return addr.range() === 'unicast' && nameListed(list.names, host);
}

/** The URL's hostname without IPv6 brackets. */
export function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** Production: whether `host` is on the HTTP list (by name, or as a literal inside one of its CIDRs). */
export function httpPermitted(list: AllowList, host: string): boolean {
  if (!list.http) return false;
  return ipaddr.isValid(host) ? inCidr(list.http.cidrs, normalize(ipaddr.parse(host))) : nameListed(list.http.names, host);
}

/**
 * Check an endpoint URL when it is registered: a URL the guard would refuse at connect time is
 * refused now, with the reason. `production`: HTTPS, unless the host is on the HTTP list.
 */
export function checkEndpointUrl(list: AllowList, raw: string, production: boolean): URL {
  if (!URL.canParse(raw)) throw new WebhookTargetRefused('url is not a URL');
  const url = new URL(raw);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new WebhookTargetRefused('url must be http(s)');
  if (url.username || url.password) throw new WebhookTargetRefused('url must not carry credentials');
  const host = hostOf(url);
  const listed = (l: Omit<AllowList, 'http'>) => (ipaddr.isValid(host) ? addressAllowed(l, host, host) : nameListed(l.names, host) || l.cidrs.length > 0);
  if (!listed(list)) throw new WebhookTargetRefused('host is not in WEBHOOK_ALLOWED_HOSTS');
  if (url.protocol === 'http:' && production && !httpPermitted(list, host)) throw new WebhookTargetRefused('https is required (the host is not allow-listed for http)');
  return url;
}
