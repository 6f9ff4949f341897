/**
 * Signed checkpoints: a hash chain shows edits in the middle, but cutting off
 * its tail (or deleting a whole day) leaves a shorter chain that still verifies.
 * So the writer keeps, beside each log file, a small file holding that log's
 * head — last seq, its hash, the entry count, and how the file links into the
 * chain — with an HMAC-SHA256 under AUDIT_SIGNING_KEY (a key the functions never
 * hold). It is rewritten atomically every few seconds while the file grows, and
 * once more with `final: true` when the category moves on to a new day, which
 * also proves that a later file exists.
 *
 * Checkpoints cannot show a file deleted together with its checkpoint (a
 * category's only day, or its newest). So the writer also keeps a signed
 * manifest, `checkpoints/manifest.json`: every log file it has ever created.
 * A listed file that is gone is a break, whatever else was deleted with it.
 *
 * Between checkpoints the last entry of every batch carries a MAC (./entry.ts
 * entryMac), and each category's newest checkpointed head is also kept off the
 * volume, in Redis (./anchor.ts), against a volume put back as it was.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import canonicalize from 'canonicalize';
import { z } from 'zod';
import { writeFileAtomic } from '../platform/atomic-file.js';
import { AUDIT_CATEGORIES } from './entry.js';

export const CHECKPOINT_DIR = 'checkpoints';

const checkpointSchema = z
  .object({
    /**
     * 2: written by a writer that MACs the last entry of every batch, so an entry after this
     * checkpoint without a MAC was never acknowledged; 1: by a writer before entry MACs.
     */
    v: z.union([z.literal(1), z.literal(2)]),
    category: z.enum(AUDIT_CATEGORIES),
    file: z.string(),
    /** seq and prevHash of the file's first entry: where it joins the chain. */
    firstSeq: z.number().int().positive(),
    chainIn: z.string().regex(/^[0-9a-f]{64}$/),
    /** The head: last seq covered, its hash, and the number of entries up to it. */
    seq: z.number().int().positive(),
    hash: z.string().regex(/^[0-9a-f]{64}$/),
    count: z.number().int().positive(),
    /** The category has moved on to a later file: this one is closed. */
    final: z.boolean(),
    writtenAt: z.string(),
    mac: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type Checkpoint = z.infer<typeof checkpointSchema>;
export type UnsignedCheckpoint = Omit<Checkpoint, 'mac'>;

function mac(key: string, body: object): string {
  return createHmac('sha256', key).update(canonicalize(body)!).digest('hex');
}

export function signCheckpoint(key: string, body: UnsignedCheckpoint): Checkpoint {
  return { ...body, mac: mac(key, body) };
}

export function checkpointPath(auditDir: string, logFile: string): string {
  return path.join(auditDir, CHECKPOINT_DIR, logFile.replace(/\.log$/, '.checkpoint.json'));
}

export async function writeCheckpoint(auditDir: string, checkpoint: Checkpoint): Promise<void> {
  await writeFileAtomic(checkpointPath(auditDir, checkpoint.file), `${JSON.stringify(checkpoint)}\n`);
}

export const MANIFEST_FILE = 'manifest.json';

const manifestSchema = z
  .object({
    v: z.literal(1),
    /** Every log file the writer has created, sorted. */
    files: z.array(z.string()),
    writtenAt: z.string(),
    mac: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type Manifest = z.infer<typeof manifestSchema>;

export function manifestPath(auditDir: string): string {
  return path.join(auditDir, CHECKPOINT_DIR, MANIFEST_FILE);
}

export async function writeManifest(auditDir: string, key: string, files: Iterable<string>): Promise<void> {
  const body = { v: 1 as const, files: [...files].sort(), writtenAt: new Date().toISOString() };
  await writeFileAtomic(manifestPath(auditDir), `${JSON.stringify({ ...body, mac: mac(key, body) })}\n`);
}

export type ManifestRead = { state: 'absent' } | { state: 'invalid'; why: string } | { state: 'valid'; manifest: Manifest };

export async function readManifest(auditDir: string, key: string): Promise<ManifestRead> {
  const read = await readSigned(manifestPath(auditDir), key, manifestSchema);
  return read.state === 'valid' ? { state: 'valid', manifest: read.value } : read;
}

type SignedRead<T> = { state: 'absent' } | { state: 'invalid'; why: string } | { state: 'valid'; value: T };

/** Read a JSON file signed with `mac` and check its schema and signature. */
async function readSigned<T extends { mac: string }>(file: string, key: string, schema: z.ZodType<T>): Promise<SignedRead<T>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'absent' };
    throw err;
  }
  let parsed: T;
  try {
    parsed = schema.parse(JSON.parse(text));
  } catch {
    return { state: 'invalid', why: 'unparseable or wrong fields' };
  }
  const { mac: given, ...body } = parsed;
  const expected = Buffer.from(mac(key, body), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(given, 'hex'))) return { state: 'invalid', why: 'signature does not match (forged, edited, or another key)' };
  return { state: 'valid', value: parsed };
}

export type CheckpointRead =
  | { state: 'absent' }
  | { state: 'invalid'; why: string }
  | { state: 'valid'; checkpoint: Checkpoint };

/** Read and authenticate the checkpoint of `logFile`. */
export async function readCheckpoint(auditDir: string, logFile: string, key: string): Promise<CheckpointRead> {
  const read = await readSigned(checkpointPath(auditDir, logFile), key, checkpointSchema);
  if (read.state === 'absent') return read;
  if (read.state === 'invalid') return { state: 'invalid', why: read.why === 'unparseable or wrong fields' ? 'not a checkpoint (unparseable or wrong fields)' : read.why };
  const parsed = read.value;
  if (parsed.file !== logFile) return { state: 'invalid', why: `signed for ${parsed.file}, found beside ${logFile}` };
  return { state: 'valid', checkpoint: parsed };
}
