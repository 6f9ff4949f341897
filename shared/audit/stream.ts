/**
 * The Redis side of the audit pipeline, shared by the functions (producers) and
 * the audit writer (the single sequencer).
 *
 * Functions XADD events to one stream. The writer appends them to the files,
 * fsyncs, then PUBLISHes the ids it made durable (or refused) to the channel
 * of the process that submitted them (its entries name it: ACK_TO_FIELD), so
 * that an acknowledgement wakes only the process waiting for it — with one
 * shared channel every replica would wake and parse every id of every batch.
 * Each function process holds one subscriber connection and resolves the
 * waiting `record()` calls. Explicit ids rather than a "durable up to" watermark:
 * after a Redis crash that loses its last second (AOF everysec), new stream ids
 * may fall below ids the writer already passed, and a watermark would then
 * acknowledge entries that were never written.
 */
export const AUDIT_STREAM = 'pulsevault:audit:entries';
export const AUDIT_ACK_CHANNEL = 'pulsevault:audit:acks';
/**
 * The first field of a stream entry: the submitting process' acknowledgement
 * id (a UUID); its acknowledgements go to ackChannel(id). An entry without it
 * (another producer, or a function of an earlier version) is acknowledged on
 * AUDIT_ACK_CHANNEL itself.
 */
export const ACK_TO_FIELD = 'ack';
/** Last stream id the writer made durable (for operators and the lag gauge). */
export const AUDIT_DURABLE_KEY = 'pulsevault:audit:durable-id';
export const AUDIT_LEASE_KEY = 'pulsevault:audit:writer-lease';
export const AUDIT_FENCE_KEY = 'pulsevault:audit:writer-fence';

/** Where the acknowledgements of a process with this acknowledgement id are published. */
export function ackChannel(ackId: string): string {
  return `${AUDIT_ACK_CHANNEL}:${ackId}`;
}

export interface AckMessage {
  /** Stream ids now durable in the audit files. */
  durable: string[];
  /** Stream ids the writer refused (malformed; never written). */
  rejected: string[];
}

export function encodeAck(ack: AckMessage): string {
  return JSON.stringify(ack);
}

export function decodeAck(message: string): AckMessage | null {
  try {
    const v = JSON.parse(message) as Partial<AckMessage>;
    if (!Array.isArray(v.durable) || !Array.isArray(v.rejected)) return null;
    return { durable: v.durable.map(String), rejected: v.rejected.map(String) };
  } catch {
    return null;
  }
}

/**
 * The id of the i-th of `count` events in one stream entry (a process submits
 * the events of one event-loop turn as one XADD): the entry's id when it holds
 * one, else `<entry id>.<i>`. Stored as the audit entry's `streamId` and used
 * in acknowledgements; ordered by compareStreamIds (entry id, then i).
 */
export function eventStreamId(entryId: string, i: number, count: number): string {
  return count === 1 ? entryId : `${entryId}.${i}`;
}

/** Milliseconds part of a stream id: when Redis accepted the entry. */
export function streamIdTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
