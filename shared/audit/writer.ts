/**
 * The audit writer: the single sequencer of every category's hash chain.
 *
 * Functions hand events over directly (sequenceDirect, fed by the intake,
 * shared/audit/intake.ts) or, while they cannot, XADD them to one Redis stream.
 * This writer, holding the writer lease, gives each its seq/ts/prevHash/hash
 * in its category, appends them to `<category>-YYYY-MM-DD.log`, fsyncs, then
 * answers the direct ones, publishes the ids of the stream ones it made durable
 * and trims them from the stream. Only then does the function's `record()`
 * resolve. Batches of both kinds run one at a time (exclusive), on the same
 * heads and files.
 *
 * Group commit: a batch is everything that arrived since the last read; it is
 * appended, fsynced and acknowledged before the next read, so what arrives
 * while one fsync runs is the next batch, covered by the next fsync. A failed
 * fsync acknowledges nothing and the state is rebuilt from the files, as after
 * any write failure. Costs are per batch, not per entry, and on a 2-core VM each
 * wake-up of another process or thread costs 0.1–0.5 ms of CPU: so appends and
 * the fsync run on the writer's own thread (libuv's thread pool would add two
 * wake-ups each; measured slower, with the fsync overlapping the next batch or
 * not), the acknowledgements travel in the same write as the next XREAD, and the
 * durable id and the stream's trim follow every 100 ms. A stream entry holds the
 * events one process submitted in one turn (eventsOf).
 *
 * Between checkpoints: the last line of each file's batch carries a MAC (entry.ts
 * entryMac) in the same write, so an entry is vouched for once acknowledged, and
 * lines found after the last MAC and checkpoint on start were never acknowledged
 * by this writer: they are cut off, never checkpointed. Each checkpointed head is
 * also anchored in Redis (anchor.ts) against the volume being put back as it was.
 *
 * Resuming exactly where it stopped: every entry stores its `streamId`. On start
 * (and after any write failure) the state is rebuilt from the files alone — a
 * torn last line is cut off, the last entry of each category gives seq, hash
 * and the last stream id written — and the stream is read again from its start
 * (it only holds what was not yet trimmed). An event whose id is not above its
 * category's last written id is already in the file: it is acknowledged, not
 * written again. Nothing is trimmed before it is durable, so nothing is skipped.
 * A direct event stores its category's last stream id (it was never on the
 * stream), so the rule still holds; it is never replayed: its caller had no
 * answer unless it was durable.
 */
import { fsyncSync, writeSync } from 'node:fs';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fsyncDir, fsyncFile } from '../platform/atomic-file.js';
import type { Logger } from '../platform/log.js';
import { counter } from '../platform/metrics.js';
import type { ChainableCommander } from 'ioredis';
import type { Redis } from '../platform/redis.js';
import type { KeyObject } from 'node:crypto';
import { advanceAnchor, markRolledBack, readAnchors } from './anchor.js';
import { CHECKPOINT_DIR, readCheckpoint, readManifest, signCheckpoint, writeCheckpoint, writeManifest, type CheckpointRead } from './checkpoint.js';
import {
  AUDIT_CATEGORIES,
  chainEntry,
  compareStreamIds,
  entryMacKey,
  GENESIS_HASH,
  hasValidMac,
  logFileName,
  parseSubmittedEvent,
  utcDay,
  withMac,
  type AuditEntry,
  type SubmittedEvent,
  type AuditCategory,
} from './entry.js';
import { lengthThroughLast, listLogFiles, readFileEnds, type LogFile } from './files.js';
import type { Outcome } from './intake.js';
import { WriterLease } from './lease.js';
import { UUID_PATTERN } from '../platform/ids.js';
import { ACK_TO_FIELD, ackChannel, AUDIT_ACK_CHANNEL, AUDIT_DURABLE_KEY, AUDIT_STREAM, encodeAck, eventStreamId, type AckMessage } from './stream.js';

export interface WriterOptions {
  auditDir: string;
  signingKey: string;
  /** Connection for XREAD BLOCK (waits for Redis to come back). */
  reader: Redis;
  /** Connection for everything else. */
  redis: Redis;
  log: Logger;
  leaseMs?: number;
  /** Replicas that must confirm the writer lease (WAIT) before it counts: see shared/platform/redis.ts replicasToConfirm. */
  leaseReplicas?: number;
  /** How often a growing file's checkpoint is refreshed. */
  checkpointEveryMs?: number;
  /** Most entries per batch (one fsync per file per batch). */
  batchSize?: number;
  /** Wall clock for entry timestamps (tests move it across midnight). */
  now?: () => number;
  /**
   * Told when the writer starts appending (it holds the lease and has rebuilt its state) and when it
   * stops: direct submission (shared/audit/intake.ts) is open exactly while it appends.
   */
  onActive?: (active: boolean) => Promise<void>;
}

/** An event to sequence, with its stream id, or null when it was handed over directly. */
interface Submission {
  streamId: string | null;
  event: SubmittedEvent | null;
}

/** The writer cannot append now (no lease, or its state is being rebuilt): nothing was written. */
class WriterInactiveError extends Error {
  constructor() {
    super('the audit writer is not appending');
    this.name = 'WriterInactiveError';
  }
}

/** Where a category's chain stands, as rebuilt from its files. */
interface Head {
  category: AuditCategory;
  /** Latest file (null before the first entry ever). */
  file: string | null;
  day: string | null;
  firstSeq: number;
  chainIn: string;
  seq: number;
  hash: string;
  ts: string | null;
  /** ts in ms since the epoch (0 before the first entry): compared with the clock for every entry. */
  tsMs: number;
  lastStreamId: string;
  /** Bytes of the file (appends go at this offset). */
  size: number;
  checkpointedSeq: number;
  checkpointedAt: number;
}

/** A file being written in the current batch. */
interface PendingFile {
  head: Head;
  file: string;
  lines: string[];
  /** Hash of the last of `lines`: the one that carries the batch's MAC. */
  lastHash: string;
  /** The file this one follows (to mark final once this one is durable), if the batch rotated the day. */
  closes: Head | null;
}

/** Acknowledgements by channel (the submitting process'). */
type Acks = Map<string, AckMessage>;

function ackFor(acks: Acks, channel: string): AckMessage {
  let ack = acks.get(channel);
  if (!ack) acks.set(channel, (ack = { durable: [], rejected: [] }));
  return ack;
}

const entriesWritten = counter({
  name: 'pulsevault_audit_entries_total',
  help: 'Audit entries made durable in the audit files, per category.',
  labelNames: ['category'] as const,
});
const writeFailures = counter({
  name: 'pulsevault_audit_write_failures_total',
  help: 'Write cycles (recovery or batch) the writer could not complete; the events stay queued and are retried.',
});
const refusedEvents = counter({
  name: 'pulsevault_audit_refused_events_total',
  help: 'Events the writer refused as malformed (from the stream or the intake), never written: a field not of its type, an unknown action.',
});

type StreamReply = [string, [string, string[]][]][] | null;

/** How long acknowledged entries may stay in the stream (and the durable id lag) before they are trimmed. */
const TRIM_EVERY_MS = 100;

export class AuditWriter {
  private readonly lease: WriterLease;
  private readonly leaseMs: number;
  private readonly checkpointEveryMs: number;
  private readonly batchSize: number;
  private readonly now: () => number;
  /** The entry MACs' key (derived from the signing key). */
  private readonly macKey: KeyObject;
  private heads = new Map<AuditCategory, Head>();
  /** Every log file created so far, as the signed manifest lists them. */
  private manifest = new Set<string>();
  /** Open for appending, by file name. */
  private fds = new Map<string, FileHandle>();
  /** Files of a past day, still open until the fsync that follows their last append. */
  private retired = new Set<FileHandle>();
  private lastReadId = '0-0';
  /** Holds the lease and has rebuilt its state from the files: appends. */
  private active = false;
  /** The tail of the exclusive() queue. */
  private turn: Promise<unknown> = Promise.resolve();
  private stopping = false;
  /** The last stream entry acknowledged, and the timer that trims up to it. */
  private acknowledgedUpTo: string | null = null;
  private trimTimer: NodeJS.Timeout | null = null;
  /** Acknowledgements not yet sent: the next read carries them (acknowledge). */
  private unsent: Acks | null = null;
  private stopped: Promise<void> | null = null;

  constructor(private readonly o: WriterOptions) {
    this.leaseMs = o.leaseMs ?? 10_000;
    this.checkpointEveryMs = o.checkpointEveryMs ?? 5_000;
    this.batchSize = o.batchSize ?? 2_000;
    this.now = o.now ?? Date.now;
    this.macKey = entryMacKey(o.signingKey);
    this.lease = new WriterLease(o.redis, this.leaseMs, Math.min(2_000, this.leaseMs / 4), o.leaseReplicas ?? 0);
    // Redis may come back empty, the lease key free for a standby: after a lost connection, confirm before appending.
    for (const conn of [o.redis, o.reader]) conn.on('close', () => this.lease.suspend());
  }

  /** Run until stop(): take the lease, recover, then sequence batches. */
  start(): Promise<void> {
    this.stopped ??= this.run();
    return this.stopped;
  }

  /** Finish the batch in hand, write every pending checkpoint, release the lease. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.stopped;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let recovering = false;
      try {
        // Renew first: a loop turn slowed past the safety margin (a loaded CPU) finds the key still ours and
        // carries on; checking canAppend first gave the lease up, stood by behind our own key until it
        // lapsed, and refused every entry in flight meanwhile.
        if (!(await this.lease.renew()) || !this.lease.canAppend()) {
          await this.setActive(false);
          if (!(await this.acquire())) break;
        }
        if (!this.active) {
          recovering = true;
          await this.exclusive(() => this.recover());
          recovering = false;
          await this.setActive(true);
        }
        const batch = await this.read();
        if (batch.length > 0) await this.exclusive(() => this.persistStream(batch));
        await this.exclusive(() => this.checkpointDue(false));
        failures = 0;
      } catch (err) {
        failures += 1;
        writeFailures.inc();
        this.o.log.error({ err: errorSummary(err), failures }, 'audit write cycle failed; rebuilding state from the files and retrying');
        // Rebuilt from the files on the next turn: whatever part of the batch reached them is found there, the rest is written again.
        await this.setActive(false);
        await sleep(Math.min(100 * 2 ** Math.min(failures, 5), 3_000));
        if (recovering) await this.lease.release(); // force a full restart of the cycle (acquire → recover)
      }
    }
    await this.setActive(false, true);
  }

  /**
   * Start or stop appending. Stopping closes direct submission first (what it
   * read is answered), then the files; on the final stop the pending
   * checkpoints are written and the lease released.
   */
  private async setActive(active: boolean, final = false): Promise<void> {
    if (active) {
      this.active = true;
      // Without the direct way in the functions still have the stream: keep appending.
      await this.o.onActive?.(true).catch((err: unknown) => this.o.log.error({ err: errorSummary(err) }, 'could not open audit intake; functions submit through the Redis stream'));
      return;
    }
    const wasActive = this.active;
    this.active = false;
    if (wasActive) await this.o.onActive?.(false).catch((err: unknown) => this.o.log.error({ err: errorSummary(err) }, 'could not close audit intake'));
    await this.exclusive(async () => {
      try {
        if (final && wasActive && this.lease.canAppend()) await this.checkpointDue(true);
      } finally {
        if (final) {
          this.sendUnsent();
          this.trimAcknowledged();
        }
        await this.closeFiles();
        if (final) await this.lease.release();
      }
    });
  }

  /** Run `work` alone: the stream's batches, direct batches, recovery and checkpoints share the heads and files. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.turn.then(work);
    this.turn = result.catch(() => undefined);
    return result;
  }

  /**
   * Make events handed over directly durable (shared/audit/intake.ts), in the
   * same chains as the stream's; throws WriterInactiveError when the writer is
   * not appending, and the write error when a write fails (nothing of the
   * batch is acknowledged; the writer rebuilds its state from the files).
   */
  sequenceDirect(events: (SubmittedEvent | null)[]): Promise<Outcome[]> {
    return this.exclusive(async () => {
      if (!this.active || !this.lease.canAppend()) throw new WriterInactiveError();
      try {
        return await this.persist(events.map((event) => ({ streamId: null, event })));
      } catch (err) {
        writeFailures.inc();
        this.o.log.error({ err: errorSummary(err) }, 'audit write of a direct batch failed; rebuilding state from the files');
        this.active = false; // the run loop recovers before the next append
        await this.closeFiles();
        throw err;
      }
    });
  }

  private async acquire(): Promise<boolean> {
    // Each said once while it lasts: a Redis outage or a standby's wait would otherwise log every try.
    let waiting = false;
    let unreachable = false;
    while (!this.stopping) {
      try {
        if (await this.lease.tryAcquire()) {
          this.o.log.info({ generation: this.lease.fence }, 'audit writer lease acquired');
          return true;
        }
        if (!waiting) this.o.log.info('another audit writer holds the lease; standing by');
        waiting = true;
      } catch (err) {
        if (!unreachable) this.o.log.warn({ err: errorSummary(err) }, 'audit writer lease: Redis unavailable; retrying');
        unreachable = true;
      }
      await sleep(Math.min(1_000, this.leaseMs / 4));
    }
    return false;
  }

  /** Rebuild every category's head from the files; re-read the stream from its start. */
  async recover(): Promise<void> {
    await mkdir(path.join(this.o.auditDir, CHECKPOINT_DIR), { recursive: true });
    const files = await listLogFiles(this.o.auditDir);
    const heads = new Map<AuditCategory, Head>();
    for (const category of AUDIT_CATEGORIES) heads.set(category, await this.recoverCategory(category, files.get(category) ?? []));
    this.heads = heads;
    this.lastReadId = '0-0';
    await this.recoverManifest([...files.values()].flat().map((f) => f.name));
    await this.checkAnchors(heads).catch((err: unknown) => this.o.log.warn({ err: errorSummary(err) }, 'could not compare the audit files with their anchor in Redis'));
  }

  /**
   * Files that end before their category's anchor were put back as they were earlier (or lost
   * entries): said, and the anchor marked, so that the chain appended from here cannot move it on
   * and hide that (./anchor.ts). Appending goes on: refusing every access would not bring them back.
   */
  private async checkAnchors(heads: Map<AuditCategory, Head>): Promise<void> {
    for (const [category, anchor] of await readAnchors(this.o.redis)) {
      const head = heads.get(category)!;
      if (anchor.rolledBack) {
        this.o.log.error({ category, anchorSeq: anchor.seq, since: anchor.rolledBack.at }, 'the audit anchor in Redis is marked rolled back: the files were found behind it (run `pulsevault audit verify`)');
      } else if (head.seq < anchor.seq || (head.seq === anchor.seq && head.hash !== anchor.hash)) {
        this.o.log.error({ category, volumeSeq: head.seq, anchorSeq: anchor.seq }, 'the audit files end before their anchor in Redis: the volume was rolled back; marking the anchor (run `pulsevault audit verify`)');
        await markRolledBack(this.o.redis, category, head.seq);
      }
    }
  }

  /**
   * The manifest lists every file ever created: what it already lists stays listed (a file deleted
   * since is a break for the verifier), files on disk it lacks (created just before a crash, or by a
   * version without manifests) are added.
   */
  private async recoverManifest(onDisk: string[]): Promise<void> {
    const read = await readManifest(this.o.auditDir, this.o.signingKey);
    if (read.state === 'invalid') this.o.log.error({ why: read.why }, 'the audit manifest is not valid; rewriting it from the files on disk (run `pulsevault audit verify`)');
    const listed = read.state === 'valid' ? read.manifest.files : [];
    this.manifest = new Set([...listed, ...onDisk]);
    if (read.state !== 'valid' || this.manifest.size !== listed.length) await writeManifest(this.o.auditDir, this.o.signingKey, this.manifest);
  }

  private async recoverCategory(category: AuditCategory, files: LogFile[]): Promise<Head> {
    const empty: Head = { category, file: null, day: null, firstSeq: 1, chainIn: GENESIS_HASH, seq: 0, hash: GENESIS_HASH, ts: null, tsMs: 0, lastStreamId: '0-0', size: 0, checkpointedSeq: 0, checkpointedAt: 0 };
    for (let i = files.length - 1; i >= 0; i--) {
      const file = files[i]!.name;
      const full = path.join(this.o.auditDir, file);
      let ends = await readFileEnds(full);
      if (ends.tornBytes > 0) {
        // A crash mid-append: those bytes were never fsynced, so never acknowledged.
        this.o.log.warn({ file, bytes: ends.tornBytes }, 'cutting off a torn last line left by a crash');
        await cutTo(full, ends.size);
      }
      const cp = await readCheckpoint(this.o.auditDir, file, this.o.signingKey);
      if (ends.last && !this.vouchedFor(ends.last, cp)) {
        if (cp.state === 'valid' && cp.checkpoint.v === 1) {
          // Written by a version before entry MACs, which crashed before checkpointing them: its entries were acknowledged.
          this.o.log.warn({ file, fromSeq: cp.checkpoint.seq + 1, toSeq: ends.last.seq }, 'entries after the checkpoint of a writer before entry MACs: kept, and covered by the next checkpoint');
        } else {
          // Every batch ends with a MAC and is acknowledged only once durable: lines after the last one were either
          // cut short by a crash (never acknowledged) or appended by someone without the key. Not extended either way.
          const kept = await lengthThroughLast(full, (entry) => this.vouchedFor(entry, cp));
          this.o.log.error({ file, entries: kept.after, toSeq: ends.last.seq }, 'cutting off entries after the last MAC and checkpoint: a batch cut short by a crash, or appended without the key (verify a copy of the volume)');
          await cutTo(full, kept.size);
          ends = await readFileEnds(full);
        }
      }
      if (!ends.first || !ends.last) {
        // Created, then a crash before its first line was durable: holds nothing.
        await rm(full);
        await fsyncDir(this.o.auditDir);
        continue;
      }
      // What we read may still sit only in the page cache (e.g. after a failed fsync): make it durable before acknowledging it.
      await fsyncFile(full);
      const head: Head = {
        category,
        file,
        day: files[i]!.day,
        firstSeq: ends.first.seq,
        chainIn: ends.first.prevHash,
        seq: ends.last.seq,
        hash: ends.last.hash,
        ts: ends.last.ts,
        tsMs: Date.parse(ends.last.ts),
        lastStreamId: ends.last.streamId,
        size: ends.size,
        checkpointedSeq: cp.state === 'valid' ? cp.checkpoint.seq : 0,
        checkpointedAt: 0,
      };
      if (i > 0) await this.ensureFinal(files[i - 1]!);
      return head;
    }
    return empty;
  }

  /** Whether an entry of a file with this checkpoint is vouched for: it carries a valid MAC, or the checkpoint covers it. */
  private vouchedFor(entry: AuditEntry, cp: CheckpointRead): boolean {
    return hasValidMac(this.macKey, entry) || (cp.state === 'valid' && entry.seq <= cp.checkpoint.seq);
  }

  /** A crash between a new day's first write and closing the previous file leaves the latter unfinalised. */
  private async ensureFinal(previous: LogFile): Promise<void> {
    const cp = await readCheckpoint(this.o.auditDir, previous.name, this.o.signingKey);
    if (cp.state === 'valid' && cp.checkpoint.final) return;
    const ends = await readFileEnds(path.join(this.o.auditDir, previous.name));
    if (!ends.first || !ends.last) return;
    await this.writeCheckpointOf(
      { category: previous.category, file: previous.name, day: previous.day, firstSeq: ends.first.seq, chainIn: ends.first.prevHash, seq: ends.last.seq, hash: ends.last.hash, ts: ends.last.ts, tsMs: Date.parse(ends.last.ts), lastStreamId: ends.last.streamId, size: ends.size, checkpointedSeq: 0, checkpointedAt: 0 },
      true,
    );
  }

  /** The next batch; the acknowledgements not yet sent go out in the same write, before the XREAD. */
  private async read(): Promise<[string, string[]][]> {
    const acks = this.takeUnsent();
    // The lease is renewed between turns: a turn blocked here must leave room for that (an eighth of a 2 s lease, 1 s of the default 10 s).
    const args = ['COUNT', this.batchSize, 'BLOCK', Math.min(1_000, Math.floor(this.leaseMs / 8)), 'STREAMS', AUDIT_STREAM, this.lastReadId] as const;
    if (!acks) return ((await this.o.reader.xread(...args)) as StreamReply)?.[0]?.[1] ?? [];
    const replies = await publishAll(this.o.reader.pipeline(), acks).xread(...args).exec();
    const [readErr, reply] = replies!.pop()!;
    this.warnIfUnpublished(replies!);
    if (readErr) throw readErr;
    return (reply as StreamReply)?.[0]?.[1] ?? [];
  }

  /** Sequence a batch read from the stream, make it durable, acknowledge it to the processes that submitted it. */
  private async persistStream(batch: [string, string[]][]): Promise<void> {
    if (!this.lease.canAppend()) return; // the next turn renews or gives up the lease
    const submissions: Submission[] = [];
    const channels: string[] = [];
    for (const [entryId, fields] of batch) {
      const { channel, events } = eventsOf(entryId, fields);
      for (const [streamId, event] of events) {
        submissions.push({ streamId, event });
        channels.push(channel);
      }
    }
    const outcomes = await this.persist(submissions);
    const acks: Acks = new Map();
    outcomes.forEach((outcome, i) => {
      const ack = ackFor(acks, channels[i]!);
      (outcome === 'durable' ? ack.durable : ack.rejected).push(submissions[i]!.streamId!);
    });
    this.lastReadId = batch[batch.length - 1]![0];
    this.acknowledge(acks, this.lastReadId);
  }

  /**
   * Sequence events, append them, make them durable. A stream event already in
   * its file (a replay after a restart) is durable without being written again.
   * An event handed over directly has no stream id: its entry stores its
   * category's last stream id, the point a replay resumes from.
   */
  private async persist(submissions: Submission[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    const pending = new Map<string, PendingFile>();
    // Work on copies: the heads change only once the batch is durable (a failure rebuilds them from the files).
    const heads = new Map([...this.heads].map(([c, h]) => [c, { ...h }]));
    const written = new Map<AuditCategory, number>();
    // One reading of the clock per batch (a batch is sequenced within milliseconds), not one per entry.
    const now = this.now();

    for (const { streamId, event } of submissions) {
      if (!event) {
        outcomes.push('refused');
        continue;
      }
      outcomes.push('durable');
      const head = heads.get(event.category)!;
      if (streamId !== null && compareStreamIds(streamId, head.lastStreamId) <= 0) continue; // already in the file (replay after a restart)
      // Never before the category's last entry (the clock may step back); formatted only when it moved.
      const tsMs = Math.max(now, head.tsMs);
      const ts = tsMs === head.tsMs && head.ts ? head.ts : new Date(tsMs).toISOString();
      const day = utcDay(ts);
      let closes: Head | null = null;
      if (head.day !== day) {
        if (head.file) closes = { ...head };
        Object.assign(head, { file: logFileName(event.category, day), day, firstSeq: head.seq + 1, chainIn: head.hash, size: 0, checkpointedSeq: 0, checkpointedAt: 0 });
      }
      const lastStreamId = streamId ?? head.lastStreamId;
      const { hash, line } = chainEntry(event, { seq: head.seq + 1, ts, streamId: lastStreamId, prevHash: head.hash });
      Object.assign(head, { seq: head.seq + 1, hash, ts, tsMs, lastStreamId });
      const target = pending.get(head.file!) ?? { head, file: head.file!, lines: [], lastHash: hash, closes };
      target.lines.push(line);
      target.lastHash = hash;
      pending.set(head.file!, target);
      written.set(event.category, (written.get(event.category) ?? 0) + 1);
    }

    const touched: FileHandle[] = [];
    const rotations: PendingFile[] = [];
    let created = false;
    for (const p of pending.values()) {
      const appended = await this.append(p);
      touched.push(appended.fd);
      created ||= appended.created;
      if (p.closes) rotations.push(p);
    }
    // After the appends: a listed file always exists (or was deleted, which the verifier must see).
    const newFiles = [...pending.keys()].filter((file) => !this.manifest.has(file));
    if (newFiles.length > 0) {
      for (const file of newFiles) this.manifest.add(file);
      await writeManifest(this.o.auditDir, this.o.signingKey, this.manifest);
    }
    // Durable before acknowledged; retired files too (this batch may have ended one). On the writer's own
    // thread: a thread-pool fsync costs two wake-ups, and with it the writer made fewer entries/s.
    for (const fd of new Set([...touched, ...this.retired])) fsyncSync(fd.fd);
    if (created) await fsyncDir(this.o.auditDir);
    for (const fd of this.retired) await fd.close();
    this.retired.clear();
    this.heads = heads;
    for (const p of rotations) {
      // Order matters for the verifier: the new file and its checkpoint exist before the old one is marked final.
      await this.writeCheckpointOf(p.head, false);
      await this.writeCheckpointOf(p.closes!, true);
    }
    for (const [category, n] of written) entriesWritten.inc({ category }, n);
    const refused = outcomes.filter((outcome) => outcome === 'refused').length;
    if (refused > 0) {
      refusedEvents.inc(refused);
      this.o.log.error({ count: refused, first: submissions[outcomes.indexOf('refused')]!.streamId ?? 'direct' }, 'refused malformed audit events');
    }
    return outcomes;
  }

  /**
   * Write a batch's lines to its file (not yet durable), the last one with its MAC: written and
   * fsynced with the batch, so every entry is vouched for once it is acknowledged; returns the
   * descriptor to fsync.
   */
  private async append(p: PendingFile): Promise<{ fd: FileHandle; created: boolean }> {
    const full = path.join(this.o.auditDir, p.file);
    let fd = this.fds.get(p.file);
    const created = !fd && p.head.size === 0;
    if (!fd) {
      for (const [name, other] of this.fds) {
        if (!name.startsWith(`${p.head.category}-`)) continue;
        this.fds.delete(name);
        this.retired.add(other);
      }
      fd = await open(full, 'a', 0o640);
      this.fds.set(p.file, fd);
    }
    p.lines[p.lines.length - 1] = withMac(p.lines[p.lines.length - 1]!, this.macKey, p.lastHash);
    const data = Buffer.from(`${p.lines.join('\n')}\n`);
    // Synchronous: into the page cache it takes microseconds, less than a round trip through libuv's thread pool.
    const bytesWritten = writeSync(fd.fd, data);
    if (bytesWritten !== data.length) throw new Error(`short write to ${p.file}`);
    p.head.size += data.length;
    return { fd, created };
  }

  /**
   * Publish the ids to the channels of the processes that submitted them. The
   * cycle's next read sends them in the same write as its XREAD, so Redis
   * reads one command batch and answers once; should no read follow in this
   * turn (one is blocked waiting, the writer stops), they go on their own at
   * its end. Never awaited: on failure the entries are durable already and the
   * waiting calls time out (fail closed).
   */
  private acknowledge(acks: Acks, lastId: string): void {
    if (this.unsent) {
      for (const [channel, { durable, rejected }] of acks) {
        const ack = ackFor(this.unsent, channel);
        // Not push(...ids): a batch can hold more ids than a call can take arguments.
        for (const id of durable) ack.durable.push(id);
        for (const id of rejected) ack.rejected.push(id);
      }
    } else {
      this.unsent = acks;
      setImmediate(() => this.sendUnsent());
    }
    this.acknowledgedUpTo = lastId;
    this.trimTimer ??= setTimeout(() => this.trimAcknowledged(), TRIM_EVERY_MS);
  }

  /** Publish what no read has carried. */
  private sendUnsent(): void {
    const acks = this.takeUnsent();
    if (!acks) return;
    publishAll(this.o.redis.pipeline(), acks)
      .exec()
      .then(
        (replies) => this.warnIfUnpublished(replies ?? []),
        (err: unknown) => this.warnIfUnpublished([[err as Error, null]]),
      );
  }

  private takeUnsent(): Acks | null {
    const acks = this.unsent;
    this.unsent = null;
    return acks;
  }

  private warnIfUnpublished(replies: [Error | null, unknown][]): void {
    const failed = replies.find(([err]) => err);
    if (failed) this.o.log.warn({ err: errorSummary(failed[0]) }, 'could not publish audit acknowledgements');
  }

  /**
   * Record the durable id and trim what is durable from the stream: every
   * TRIM_EVERY_MS rather than with each acknowledgement (one command per batch
   * instead of three; what stays a little longer is only read again after a
   * restart, and skipped as already written).
   */
  private trimAcknowledged(): void {
    if (this.trimTimer) clearTimeout(this.trimTimer);
    this.trimTimer = null;
    const lastId = this.acknowledgedUpTo;
    if (!lastId) return;
    const [ms, seq] = lastId.split('-');
    const warn = (err: unknown) => this.o.log.warn({ err: errorSummary(err) }, 'could not trim the audit stream');
    this.o.redis
      .pipeline()
      .set(AUDIT_DURABLE_KEY, lastId)
      .xtrim(AUDIT_STREAM, 'MINID', `${ms}-${BigInt(seq!) + 1n}`)
      .exec()
      .then((replies) => {
        const failed = replies?.find(([err]) => err);
        if (failed) warn(failed[0]);
      }, warn);
  }

  private async checkpointDue(all: boolean): Promise<void> {
    const now = performance.now();
    const due = [...this.heads.values()].filter((head) => head.file && head.seq !== head.checkpointedSeq && (all || now - head.checkpointedAt >= this.checkpointEveryMs));
    if (due.length === 0) return;
    // A checkpoint vouches for its entries: every appended entry is durable once persist() returns.
    for (const head of due) await this.writeCheckpointOf(head, false);
  }

  private async writeCheckpointOf(head: Head, final: boolean): Promise<void> {
    const writtenAt = new Date().toISOString();
    await writeCheckpoint(
      this.o.auditDir,
      signCheckpoint(this.o.signingKey, {
        v: 2,
        category: head.category,
        file: head.file!,
        firstSeq: head.firstSeq,
        chainIn: head.chainIn,
        seq: head.seq,
        hash: head.hash,
        count: head.seq - head.firstSeq + 1,
        final,
        writtenAt,
      }),
    );
    head.checkpointedSeq = head.seq;
    head.checkpointedAt = performance.now();
    // The category's head off the volume (a closed file's is not its head). Not awaited: appends go on
    // without Redis; on stop the lease's release, on the same connection, follows it.
    if (!final) advanceAnchor(this.o.redis, head.category, { file: head.file!, seq: head.seq, hash: head.hash, at: writtenAt }).catch((err: unknown) => this.o.log.warn({ err: errorSummary(err) }, 'could not update the audit anchor in Redis'));
  }

  private async closeFiles(): Promise<void> {
    const fds = [...this.fds.values(), ...this.retired];
    this.fds.clear();
    this.retired.clear();
    await Promise.all(fds.map((fd) => fd.close().catch(() => undefined)));
  }
}

/**
 * The events of one stream entry with their ids, and the channel for their
 * acknowledgements: an entry holds the events one process submitted in one
 * turn (`event` fields in order), after the process' acknowledgement id
 * (ACK_TO_FIELD; without it, the shared channel); the i-th of several events
 * is `<entry id>.<i>`, a lone one keeps the entry's id (shared/audit/stream.ts).
 * A malformed event is null (refused alone); a malformed entry, one null.
 */
function eventsOf(entryId: string, fields: string[]): { channel: string; events: [string, SubmittedEvent | null][] } {
  const refused = (channel: string) => ({ channel, events: [[entryId, null]] as [string, null][] });
  let channel = AUDIT_ACK_CHANNEL;
  let first = 0;
  if (fields[0] === ACK_TO_FIELD) {
    if (!UUID_PATTERN.test(fields[1] ?? '')) return refused(channel);
    channel = ackChannel(fields[1]!);
    first = 2;
  }
  const values: string[] = [];
  for (let i = first; i < fields.length; i += 2) {
    if (fields[i] !== 'event' || i + 1 >= fields.length) return refused(channel);
    values.push(fields[i + 1]!);
  }
  if (values.length === 0) return refused(channel);
  return { channel, events: values.map((json, i) => [eventStreamId(entryId, i, values.length), parseSubmittedEvent(json)]) };
}

function publishAll(pipeline: ChainableCommander, acks: Acks): ChainableCommander {
  for (const [channel, ack] of acks) pipeline.publish(channel, encodeAck(ack));
  return pipeline;
}

function errorSummary(err: unknown): string {
  return err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? err.name}: ${err.message}` : String(err);
}

/** Cut a log file to its first `size` bytes, durably. */
async function cutTo(file: string, size: number): Promise<void> {
  const fd = await open(file, 'r+');
  try {
    await fd.truncate(size);
    await fd.sync();
  } finally {
    await fd.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
