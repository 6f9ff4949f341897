/**
 * Direct submission: a function process hands its audit events straight to the
 * writer over one TCP connection, and the writer answers on it once they are
 * durable. One hop each way instead of four (XADD and its reply, the writer's
 * XREAD, the acknowledgement through pub/sub): on a 2-core node the Redis path
 * spends ~31 µs of client CPU per entry, this one ~11 (docs/audit.md).
 *
 * The Redis stream stays the other way in: a process whose connection is not
 * up (the writer is restarting, is a standby, or predates this) submits through
 * the stream, as before. So nothing is lost to a missing connection, and a
 * rollout needs no ordering.
 *
 * Wire format, lines of UTF-8 ending in `\n`:
 *   writer  → `PVAUDIT/1 <nonce, hex>`
 *   process → `AUTH <HMAC-SHA256(intakeKey, nonce), hex>`
 *   writer  → `READY` (or `ERR <reason>` and it closes)
 *   process → `<ref> <event JSON>`       ref: decimal, unique on the connection
 *   writer  → `{"durable":[refs],"refused":[refs],"unavailable":[refs]}`
 *   writer  → `BYE idle`   quiet too long: the process sends no more on it and ends it once answered
 * The key is derived from the dedicated secret AUDIT_INTAKE_KEY (`audit-intake-key`,
 * ≥ 32 random bytes). Not from the Redis password: that may be empty, or given only
 * inside REDIS_URL, and HMAC("") is a key anyone can compute. Without the secret
 * there is no direct submission: the intake stays closed, every event takes the stream.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Logger } from '../platform/log.js';
import { PendingCalls } from './pending-calls.js';

export const PROTOCOL_GREETING = 'PVAUDIT/1';
/** Longest line either side accepts (an event is well under 1 KiB): a longer one ends the connection. */
export const MAX_LINE_BYTES = 64 * 1024;

export interface DirectReply {
  durable: number[];
  /** Malformed: never written. */
  refused: number[];
  /** The writer could not make them durable (it lost its lease, a write failed): fail closed. */
  unavailable: number[];
}

/** The key both sides derive from AUDIT_INTAKE_KEY (config.auditIntakeKey, never empty). */
export function intakeKey(secret: string): Buffer {
  if (secret === '') throw new Error('the audit intake key must not be empty');
  return createHmac('sha256', secret).update('pulsevault audit intake v2').digest();
}

export function newNonce(): string {
  return randomBytes(32).toString('hex');
}

export function authProof(key: Buffer, nonce: string): string {
  return createHmac('sha256', key).update(nonce).digest('hex');
}

export function proofMatches(key: Buffer, nonce: string, proof: string): boolean {
  const expected = Buffer.from(authProof(key, nonce), 'hex');
  const given = Buffer.from(/^[0-9a-f]{64}$/.test(proof) ? proof : '', 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Split a stream of text into lines: calls `onLine` for each complete one and
 * keeps the tail. Returns false when the tail grew past MAX_LINE_BYTES
 * (characters, which is no more than bytes).
 */
export class LineSplitter {
  private carry = '';

  push(text: string, onLine: (line: string) => void): boolean {
    let start = 0;
    let data = this.carry + text;
    for (let nl = data.indexOf('\n'); nl !== -1; nl = data.indexOf('\n', start)) {
      onLine(data.slice(start, nl));
      start = nl + 1;
    }
    data = data.slice(start);
    this.carry = data;
    return data.length <= MAX_LINE_BYTES;
  }
}

/** Why a direct submission failed; client.ts turns it into AuditUnavailableError. */
export class DirectSubmissionError extends Error {
  constructor(
    readonly reason: 'writer' | 'timeout' | 'refused',
    message: string,
  ) {
    super(message);
    this.name = 'DirectSubmissionError';
  }
}

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;

/**
 * A process' connection to the writer, shared by every record() of the
 * process. `ready` only once authenticated; on any loss the calls in flight
 * fail (their entries may or may not be durable: fail closed) and it
 * reconnects with backoff, while record() uses the stream. A connection the
 * writer ended as idle is not reopened until there is an event to send (that
 * one takes the stream while the new connection authenticates).
 */
export class DirectChannel {
  private socket: Socket | null = null;
  private ready = false;
  private closed = false;
  private nextRef = 1;
  private outgoing: string[] = [];
  private readonly pending = new PendingCalls<number>(() => new DirectSubmissionError('timeout', 'not confirmed durable within the ack timeout'));
  private retryMs = RECONNECT_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Said once per outage, not per attempt. */
  private warned = false;
  /** The writer said `BYE idle`: reconnect on the next event, quietly. */
  private idle = false;

  constructor(
    private readonly address: { host: string; port: number },
    private readonly key: Buffer,
    private readonly log: Logger,
  ) {
    this.connect();
  }

  /** Whether submit() can be used now; after an idle close, asking starts a new connection. */
  canSubmit(): boolean {
    if (this.idle && !this.socket && !this.closed) {
      this.idle = false;
      this.connect();
    }
    return this.ready;
  }

  /** Resolves once the writer says the event is durable; rejects (DirectSubmissionError) otherwise. */
  submit(json: string, timeoutMs: number): Promise<void> {
    if (!this.ready) return Promise.reject(new DirectSubmissionError('writer', 'not connected to the audit writer'));
    const ref = this.nextRef++;
    // One write per event-loop turn for all the calls made in it.
    if (this.outgoing.length === 0) setImmediate(() => this.flush());
    this.outgoing.push(`${ref} ${json}\n`);
    return this.pending.wait(ref, timeoutMs);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.pending.close(new DirectSubmissionError('writer', 'audit log closed'));
    this.socket?.destroy();
  }

  private flush(): void {
    const lines = this.outgoing;
    this.outgoing = [];
    if (this.ready) this.socket!.write(lines.join(''));
  }

  private connect(): void {
    const socket = connect({ host: this.address.host, port: this.address.port, noDelay: true });
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.setKeepAlive(true, 10_000);
    const lines = new LineSplitter();
    let greeted = false;
    socket.on('data', (text: string) => {
      const fits = lines.push(text, (line) => {
        if (this.ready) return line === 'BYE idle' ? this.onIdle() : this.onReply(line);
        if (!greeted && line.startsWith(`${PROTOCOL_GREETING} `)) {
          greeted = true;
          socket.write(`AUTH ${authProof(this.key, line.slice(PROTOCOL_GREETING.length + 1))}\n`);
        } else if (greeted && line === 'READY') {
          this.ready = true;
          this.warned = false;
          this.retryMs = RECONNECT_MIN_MS;
          this.log.info({ writer: `${this.address.host}:${this.address.port}` }, 'audit: submitting directly to the audit writer');
        } else {
          // Only our own protocol's words are logged: whatever else answers on that port is not. Once per outage.
          if (!this.warned) this.log.warn({ answer: /^ERR [a-z_]{1,32}$/.test(line) ? line : 'not the audit intake' }, 'audit writer refused the direct connection; using the Redis stream');
          this.warned = true;
          socket.destroy();
        }
      });
      if (!fits) socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!this.warned) this.log.info({ err: err.code ?? err.message }, 'audit writer not reachable directly; using the Redis stream until it is');
      this.warned = true;
    });
    socket.on('close', () => {
      const wasReady = this.ready;
      this.ready = false;
      this.socket = null;
      this.outgoing = [];
      this.pending.failAll(new DirectSubmissionError('writer', 'connection to the audit writer lost'));
      if (this.closed || this.idle) return;
      if (wasReady) this.log.warn('lost the direct connection to the audit writer; using the Redis stream until it is back');
      this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
      this.retryTimer.unref();
      this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
    });
  }

  /** The writer ends a quiet connection: what this turn queued still goes out on it, then nothing more. */
  private onIdle(): void {
    this.flush();
    this.ready = false;
    this.idle = true;
    this.endWhenAnswered();
  }

  private endWhenAnswered(): void {
    if (this.idle && this.pending.size === 0) this.socket?.end();
  }

  private onReply(line: string): void {
    let reply: Partial<DirectReply>;
    try {
      reply = JSON.parse(line) as Partial<DirectReply>;
    } catch {
      return;
    }
    for (const ref of reply.durable ?? []) this.pending.settle(ref, null);
    for (const ref of reply.refused ?? []) this.pending.settle(ref, new DirectSubmissionError('refused', 'the writer refused the entry'));
    for (const ref of reply.unavailable ?? []) this.pending.settle(ref, new DirectSubmissionError('writer', 'the writer could not make the entry durable'));
    this.endWhenAnswered();
  }
}
