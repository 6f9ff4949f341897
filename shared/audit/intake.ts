/**
 * The writer's side of direct submission (shared/audit/direct.ts): a TCP
 * listener, open only while the writer holds its lease and has rebuilt its
 * state, so a process connected to it always talks to the one writer. Events
 * from every connection gather while a batch is made durable and then form the
 * next batch: one append and one fsync for all of them (group commit, as for
 * the stream). Each connection gets one reply line per batch.
 *
 * Hostile or broken peers: a connection must authenticate within AUTH_TIMEOUT_MS
 * with its first line; a line longer than MAX_LINE_BYTES, a bad ref or a failed
 * proof ends it. Memory per connection is bounded whatever the peer sends: one
 * line, MAX_PENDING_PER_CONNECTION events waiting, and replies the peer does not
 * read — past MAX_UNREAD_REPLY_BYTES the connection is not read from until they
 * drain, and one whose replies stay unread for STALLED_MS, or that half-closed
 * (FIN) and still has not taken them HALF_CLOSED_GRACE_MS later, is ended.
 * At most MAX_UNAUTHENTICATED connections wait for their proof: a new one
 * pushes out the oldest, so a flood of connections that never authenticate
 * cannot keep an authenticated process out (authenticated ones have their own
 * limit, MAX_CONNECTIONS). An authenticated connection quiet for `idleMs` with
 * nothing outstanding is told `BYE idle`: the process sends no more on it, ends
 * it once its last replies are in, and connects again when it next has an event
 * (so a quiet replica holds no slot); one that does not end it is closed
 * BYE_GRACE_MS (at most `idleMs`) later.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../platform/log.js';
import { counter, gauge } from '../platform/metrics.js';
import { LineSplitter, newNonce, PROTOCOL_GREETING, proofMatches, type DirectReply } from './direct.js';
import { parseSubmittedEvent, type SubmittedEvent } from './entry.js';

const AUTH_TIMEOUT_MS = 5_000;
const MAX_PENDING_PER_CONNECTION = 4_096;
const MAX_CONNECTIONS = 1_024;
const MAX_UNAUTHENTICATED = 128;
/** Replies written and not yet taken by the peer, past which its connection is not read from. */
const MAX_UNREAD_REPLY_BYTES = 1024 * 1024;
const STALLED_MS = 30_000;
const HALF_CLOSED_GRACE_MS = 5_000;
/** After `BYE idle`: time for the events the peer sent meanwhile to be answered and for it to end the connection. */
const BYE_GRACE_MS = 10_000;
/** Most events per batch handed to the writer (as many as one XREAD of the stream brings). */
const MAX_BATCH = 2_000;

/** What became of an event handed to the writer: durable, or refused as malformed (never written). */
export type Outcome = 'durable' | 'refused';

/** Makes the events durable, in order; throws when it cannot (then none is acknowledged). */
export type Sequence = (events: (SubmittedEvent | null)[]) => Promise<Outcome[]>;

interface Connection {
  socket: Socket;
  /** Events read and not yet answered. */
  pending: number;
  /** Called when the replies the peer has not read pass MAX_UNREAD_REPLY_BYTES. */
  onUnread(): void;
}

interface Submitted {
  conn: Connection;
  ref: number;
  event: SubmittedEvent | null;
}

const rejectedConnections = counter({
  name: 'pulsevault_audit_intake_rejected_connections_total',
  help: 'Direct connections the audit writer ended: a failed or missing authentication, a protocol error, a peer that stopped reading, or one idle past AUDIT_INTAKE_IDLE_SECONDS (reason idle).',
  labelNames: ['reason'] as const,
});
let openConnections = 0;
gauge({
  name: 'pulsevault_audit_intake_connections',
  help: 'Authenticated direct connections of function processes to the audit writer.',
  collect() {
    this.set(openConnections);
  },
});

export class AuditIntake {
  private server: Server | null = null;
  private readonly connections = new Set<Connection>();
  /** Waiting for their proof, oldest first (a Set keeps insertion order). */
  private readonly unauthenticated = new Set<Socket>();
  private queue: Submitted[] = [];
  private pumping: Promise<void> | null = null;

  constructor(
    private readonly o: { host: string; port: number; key: Buffer; sequence: Sequence; log: Logger; idleMs: number },
  ) {}

  /** Start listening (idempotent); resolves once bound. */
  async open(): Promise<void> {
    if (this.server) return;
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        this.server = null;
        reject(err);
      });
      server.listen(this.o.port, this.o.host, () => {
        server.removeAllListeners('error');
        resolve();
      });
    });
    server.on('error', (err: NodeJS.ErrnoException) => this.o.log.error({ err: err.code ?? err.message }, 'audit intake listener failed'));
    this.o.log.info({ port: this.o.port }, 'audit intake open: function processes submit directly');
  }

  /** Stop listening, answer what was read (the writer says durable or unavailable), then end every connection. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    server.close();
    await this.pumping;
    for (const conn of this.connections) conn.socket.end();
    this.o.log.info('audit intake closed: function processes use the Redis stream');
  }

  private accept(socket: Socket): void {
    socket.setEncoding('utf8');
    socket.setKeepAlive(true, 10_000);
    socket.on('error', () => socket.destroy());
    const nonce = newNonce();
    const conn: Connection = { socket, pending: 0, onUnread: () => {} };
    const lines = new LineSplitter();
    let authed = false;
    const refuse = (reason: string) => {
      rejectedConnections.inc({ reason });
      socket.end(`ERR ${reason}\n`);
      setTimeout(() => socket.destroy(), 1_000).unref();
    };
    const authTimer = setTimeout(() => refuse('auth_timeout'), AUTH_TIMEOUT_MS);
    if (this.unauthenticated.size >= MAX_UNAUTHENTICATED) {
      const oldest = this.unauthenticated.values().next().value!;
      this.unauthenticated.delete(oldest);
      rejectedConnections.inc({ reason: 'crowded_out' });
      oldest.destroy();
    }
    this.unauthenticated.add(socket);
    let stalled: NodeJS.Timeout | null = null;
    socket.on('drain', () => {
      if (stalled) clearTimeout(stalled);
      stalled = null;
      if (conn.pending < MAX_PENDING_PER_CONNECTION && socket.isPaused()) socket.resume();
    });
    conn.onUnread = () => {
      socket.pause();
      stalled ??= setTimeout(() => (rejectedConnections.inc({ reason: 'stalled' }), socket.destroy()), STALLED_MS);
    };
    let saidBye = false;
    socket.on('timeout', () => {
      // Replies still owed are activity to come: the socket times out again once they are written and it stays quiet.
      if (!authed || saidBye || conn.pending > 0) return;
      saidBye = true;
      rejectedConnections.inc({ reason: 'idle' });
      socket.write('BYE idle\n');
      setTimeout(() => socket.destroy(), Math.min(BYE_GRACE_MS, this.o.idleMs)).unref();
    });
    // A peer that half-closed gets its outstanding replies, then the connection is ended either way.
    socket.on('end', () => setTimeout(() => socket.destroy(), HALF_CLOSED_GRACE_MS).unref());
    socket.on('close', () => {
      clearTimeout(authTimer);
      if (stalled) clearTimeout(stalled);
      this.unauthenticated.delete(socket);
      if (authed) openConnections -= 1;
      this.connections.delete(conn);
    });
    socket.write(`${PROTOCOL_GREETING} ${nonce}\n`);
    socket.on('data', (text: string) => {
      const fits = lines.push(text, (line) => {
        if (socket.destroyed || socket.writableEnded) return;
        if (!authed) {
          clearTimeout(authTimer);
          if (!line.startsWith('AUTH ') || !proofMatches(this.o.key, nonce, line.slice(5))) return refuse('auth');
          this.unauthenticated.delete(socket);
          if (this.connections.size >= MAX_CONNECTIONS) return refuse('too_many');
          authed = true;
          openConnections += 1;
          this.connections.add(conn);
          socket.write('READY\n');
          socket.setTimeout(this.o.idleMs);
          return;
        }
        const space = line.indexOf(' ');
        const ref = Number(line.slice(0, space));
        if (space < 1 || !Number.isSafeInteger(ref) || ref < 0) return refuse('protocol');
        this.submit({ conn, ref, event: parseSubmittedEvent(line.slice(space + 1)) });
      });
      if (!fits) refuse('line_too_long');
    });
  }

  private submit(item: Submitted): void {
    this.queue.push(item);
    item.conn.pending += 1;
    if (item.conn.pending >= MAX_PENDING_PER_CONNECTION) item.conn.socket.pause();
    this.pumping ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.pump());
  }

  /** One batch at a time; what arrives meanwhile is the next batch. */
  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      let outcomes: (Outcome | 'unavailable')[];
      try {
        outcomes = await this.o.sequence(batch.map((item) => item.event));
      } catch {
        outcomes = batch.map(() => 'unavailable');
      }
      this.reply(batch, outcomes);
    }
    this.pumping = null;
  }

  private reply(batch: Submitted[], outcomes: (Outcome | 'unavailable')[]): void {
    const replies = new Map<Connection, DirectReply>();
    batch.forEach(({ conn, ref }, i) => {
      let reply = replies.get(conn);
      if (!reply) replies.set(conn, (reply = { durable: [], refused: [], unavailable: [] }));
      reply[outcomes[i]!].push(ref);
    });
    for (const [conn, reply] of replies) {
      conn.pending -= reply.durable.length + reply.refused.length + reply.unavailable.length;
      if (conn.socket.destroyed) continue;
      conn.socket.write(`${JSON.stringify(reply)}\n`);
      if (conn.socket.writableLength > MAX_UNREAD_REPLY_BYTES) conn.onUnread();
      else if (conn.pending < MAX_PENDING_PER_CONNECTION && conn.socket.isPaused()) conn.socket.resume();
    }
  }
}
