/**
 * The audit entry: what a function submits (an event), what the writer stores
 * (an entry: the event plus its place in the chain), how an entry is hashed and
 * which file holds it.
 *
 * hash = SHA-256 (hex) of the RFC 8785 canonical JSON of the entry without
 * `hash`, so any change to any field, or to `prevHash`, changes it. Entries
 * carry ids only: every field is validated to its type — the action from the
 * one table (./actions.ts) and in its category, the client IP an address
 * already anonymised, the user id a pseudonym (./subject.ts), every other id a
 * bounded token with no spaces, the resource a relative media path inside the
 * video's UUID folder — which keeps free text (a title, a filename, a name typed
 * into a header) out by construction, whoever submits it.
 */
import { createHmac, createSecretKey, hash, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { UUID_PATTERN } from '../platform/ids.js';
import { AUDIT_ACTIONS, type AuditAction } from './actions.js';
import { anonymizeIp } from './ip.js';

export const AUDIT_CATEGORIES = ['access', 'upload', 'transcode', 'admin'] as const;
export type AuditCategory = (typeof AUDIT_CATEGORIES)[number];
export const AUDIT_OUTCOMES = ['granted', 'denied', 'success', 'failure'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

/** prevHash of the very first entry of a category. */
export const GENESIS_HASH = '0'.repeat(64);

const code = z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'must be a lowercase code like `token_expired`');
const id = z.string().regex(/^[A-Za-z0-9._:|@/+=-]{1,128}$/, 'must be an id (no spaces, at most 128 characters)');
const uuid = z.string().regex(UUID_PATTERN, 'must be a lowercase UUID');
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
/**
 * A path inside the video's folder (`hls/720p/seg_003.m4s`, `original.mp4`) or a signed scope
 * (`hls/`, `*`): relative, ASCII names that start with no dot (so no `.`/`..` segment), bounded. Media file names are the
 * pipeline's own, never the uploader's, so no PHI can ride in it.
 */
const resource = z
  .string()
  .regex(/^(\*|(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\/)*(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?)$/, 'must be a media path inside the video (like `hls/720p/seg_003.m4s`)')
  .min(1)
  .max(200);
/** Whether a value may stand as an entry's `resource` (callers holding a path a request named drop any other). */
export function isAuditResource(value: string): boolean {
  return resource.safeParse(value).success;
}
const isoTime = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);

const action = z.enum(Object.keys(AUDIT_ACTIONS) as [AuditAction, ...AuditAction[]]);
/** ./subject.ts subjectPseudonym's form. */
const pseudonym = z.string().regex(/^sub-[0-9a-f]{32}$/, 'must be a user pseudonym (sub-<32 hex>)');
/** An address as ./ip.ts leaves it (a /24 or /48 network address): a raw IP or anything else is refused. */
const anonymisedIp = z
  .string()
  .max(64)
  .refine((ip) => anonymizeIp(ip) === ip, 'must be an anonymised IP address');

const eventFields = {
    category: z.enum(AUDIT_CATEGORIES),
    action,
    outcome: z.enum(AUDIT_OUTCOMES),
    reason: code.nullable(),
    actor: z.object({ userId: pseudonym.nullable(), role: code.nullable() }).strict().nullable(),
    videoId: uuid.nullable(),
    clientIp: anonymisedIp.nullable(),
    requestId: id.nullable(),
    /**
     * What of the video was disclosed: the rendition/path served or refused, the scope signed.
     * Absent (not null) when the action has none, so entries from before the field keep their hash.
     */
    resource: resource.optional(),
    /** When it happened, by the submitting process' clock. */
    occurredAt: isoTime,
};
const actionInItsCategory = [(e: { action: AuditAction; category: AuditCategory }) => AUDIT_ACTIONS[e.action] === e.category, { message: "action must belong to the event's category", path: ['action'] }] satisfies [unknown, unknown];

/** What a function submits (after its IP is anonymised), as it travels through the Redis stream. */
export const submittedEventSchema = z
  .object(eventFields)
  .strict()
  .refine(...actionInItsCategory);
export type SubmittedEvent = z.infer<typeof submittedEventSchema>;

/** An event as it arrives at the writer (JSON text), or null when it is not one. */
export function parseSubmittedEvent(json: string): SubmittedEvent | null {
  try {
    const parsed = submittedEventSchema.safeParse(JSON.parse(json));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** One line of an audit file (written in canonical key order, then `hash`; the hash does not depend on the order). */
export const auditEntrySchema = z
  .object({
    ...eventFields,
    /** Position in the category's chain, 1-based, continuous across days. */
    seq: z.number().int().positive(),
    /** When the writer sequenced it (never earlier than the previous entry); decides the file's day. */
    ts: isoTime,
    /**
     * The Redis stream id it came from (for an event handed over directly, its category's last
     * one): how the writer resumes exactly where it stopped.
     */
    streamId: z.string().regex(/^\d+-\d+(\.\d+)?$/),
    prevHash: hex64,
    hash: hex64,
    /**
     * On the last entry of each batch the writer appends to a file: a MAC of its hash (entryMac),
     * which vouches for it and, through the chain, for every entry before it. Not part of the hash.
     */
    mac: hex64.optional(),
  })
  .strict()
  .refine(...actionInItsCategory);
export type AuditEntry = z.infer<typeof auditEntrySchema>;

// One-shot crypto.hash: half the cost of createHash().update().digest() for a line (it runs per entry).
const sha256Hex = (text: string): string => hash('sha256', text, 'hex');

export function hashEntry(entry: Omit<AuditEntry, 'hash'>): string {
  return sha256Hex(canonicalEntry(entry, entry));
}

/** The fields the writer adds to an event: its place in the chain. */
export type ChainLink = Pick<AuditEntry, 'seq' | 'ts' | 'streamId' | 'prevHash'>;

/**
 * RFC 8785 canonical JSON of an entry without its hash: the event's fields and
 * its chain link (one object for a stored entry, two for one being chained, so
 * that the writer builds no intermediate entry). Every value is a string, an
 * integer, null or the actor object, so putting the keys in sorted order is all
 * it takes: JSON.stringify then writes what the generic `canonicalize` would,
 * at a fraction of its cost (this runs for every entry the writer chains and
 * the verifier checks); an absent optional field is left out, as canonicalize
 * leaves out an undefined one. A field added to the entry must be added here
 * (test/audit-chain checks the two agree).
 */
export function canonicalEntry(e: SubmittedEvent, link: ChainLink): string {
  return JSON.stringify({
    action: e.action,
    actor: e.actor && { role: e.actor.role, userId: e.actor.userId },
    category: e.category,
    clientIp: e.clientIp,
    occurredAt: e.occurredAt,
    outcome: e.outcome,
    prevHash: link.prevHash,
    reason: e.reason,
    requestId: e.requestId,
    // Omitted when absent: an entry written before the field existed hashes as it did then.
    ...(e.resource !== undefined && { resource: e.resource }),
    seq: link.seq,
    streamId: link.streamId,
    ts: link.ts,
    videoId: e.videoId,
  });
}

/**
 * The stored line of an event at its place in the chain, and its hash: the
 * canonical JSON with the hash appended (one serialisation for both; readers
 * parse it, so the key order is free). Built straight from the event: this runs
 * for every entry, on the writer's one thread.
 */
export function chainEntry(event: SubmittedEvent, link: ChainLink): { hash: string; line: string } {
  const canonical = canonicalEntry(event, link);
  const hash = sha256Hex(canonical);
  return { hash, line: `${canonical.slice(0, -1)},"hash":"${hash}"}` };
}

/**
 * The key of the entry MACs, derived from AUDIT_SIGNING_KEY (HKDF-SHA256, info
 * `audit-entry-mac`): like the checkpoints', a key the functions never hold, so
 * an entry appended after the newest checkpoint cannot be made to verify
 * without it; its own purpose, so no entry MAC can stand for a checkpoint's.
 */
export function entryMacKey(signingKey: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', signingKey, '', 'audit-entry-mac', 32)));
}

/** HMAC-SHA256 (hex) of an entry's hash: the hash covers every field and the chain before it. */
export function entryMac(key: KeyObject, entryHash: string): string {
  return createHmac('sha256', key).update(entryHash).digest('hex');
}

/** Whether an entry carries a MAC made with this key. */
export function hasValidMac(key: KeyObject, entry: Pick<AuditEntry, 'hash' | 'mac'>): boolean {
  return entry.mac !== undefined && timingSafeEqual(Buffer.from(entryMac(key, entry.hash), 'hex'), Buffer.from(entry.mac, 'hex'));
}

/** A stored line (chainEntry's) with its MAC appended. */
export function withMac(line: string, key: KeyObject, entryHash: string): string {
  return `${line.slice(0, -1)},"mac":"${entryMac(key, entryHash)}"}`;
}

/** UTC day (YYYY-MM-DD) of an ISO timestamp. */
export function utcDay(iso: string): string {
  return iso.slice(0, 10);
}

const FILE_NAME = /^(access|upload|transcode|admin)-(\d{4}-\d{2}-\d{2})\.log$/;

export function logFileName(category: AuditCategory, day: string): string {
  return `${category}-${day}.log`;
}

export function parseLogFileName(name: string): { category: AuditCategory; day: string } | null {
  const m = FILE_NAME.exec(name);
  return m ? { category: m[1] as AuditCategory, day: m[2]! } : null;
}

/**
 * Compare event stream ids (`ms-seq`, or `ms-seq.i` for the i-th event of one
 * entry; decimals without leading zeros) numerically: the longer number is
 * larger, else the later string; an entry's events in their order.
 */
export function compareStreamIds(a: string, b: string): number {
  const [a1, a2, a3] = splitStreamId(a);
  const [b1, b2, b3] = splitStreamId(b);
  return compareDecimals(a1, b1) || compareDecimals(a2, b2) || compareDecimals(a3, b3);
}

function splitStreamId(id: string): [string, string, string] {
  const dash = id.indexOf('-');
  const dot = id.indexOf('.', dash);
  return dot === -1 ? [id.slice(0, dash), id.slice(dash + 1), ''] : [id.slice(0, dash), id.slice(dash + 1, dot), id.slice(dot + 1)];
}

function compareDecimals(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
