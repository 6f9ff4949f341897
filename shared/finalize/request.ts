/**
 * The finalize request body: `{uploadId, filename, userId?, metadata}`.
 *
 * `userId` is the spec's field; with JWT auth the owner is the token's subject
 * and a `userId` that differs from it is refused (403). Without auth (development
 * only) it names the owner.
 *
 * Unknown fields are REJECTED (400 naming them), not ignored: a misspelt
 * `metdata` would otherwise silently store a video without its metadata.
 * Messages name the field and the rule, never the value (it may be PHI).
 */
import { z } from 'zod';
import { MAX_SUBJECT_LENGTH } from '../auth/jwt.js';
import { BadRequestError } from '../platform/errors.js';
import { exceededJsonBound } from '../platform/json-bounds.js';
import { isUploadId } from '../uploads/ids.js';

export const MAX_FILENAME_BYTES = 255;
export const MAX_METADATA_BYTES = 16 * 1024;
/** The metadata object itself is level 1; a form with sections and lists needs a handful. */
export const METADATA_BOUNDS = { maxDepth: 16, maxMembers: 1000 };
/** Whole body: metadata plus the small fields, with room for JSON escaping. */
export const MAX_BODY_BYTES = 64 * 1024;

const CONTROL_OR_SEPARATOR = /[\u0000-\u001f\u007f/\\]/;

/** The user's metadata object (title, description, …), within METADATA_BOUNDS and MAX_METADATA_BYTES (finalize and PATCH). */
export const userMetadataSchema = z
  .record(z.string(), z.unknown())
  .superRefine((v, ctx) => {
    // Shape first, without recursion: stringify (and canonicalize, later) would overflow the stack on deep nesting.
    const exceeded = exceededJsonBound(v, METADATA_BOUNDS);
    if (exceeded === 'depth') ctx.addIssue({ code: 'custom', message: `must be nested at most ${METADATA_BOUNDS.maxDepth} levels deep` });
    else if (exceeded === 'members') ctx.addIssue({ code: 'custom', message: `must hold at most ${METADATA_BOUNDS.maxMembers} keys and array items` });
    else if (Buffer.byteLength(JSON.stringify(v)) > MAX_METADATA_BYTES) ctx.addIssue({ code: 'custom', message: `must be at most ${MAX_METADATA_BYTES} bytes as JSON` });
  });

const schema = z.strictObject({
  uploadId: z.string().refine(isUploadId, 'must be the upload id (a UUID) from the upload URL'),
  filename: z
    .string()
    .refine((v) => v.trim().length > 0, 'must not be empty')
    .refine((v) => Buffer.byteLength(v) <= MAX_FILENAME_BYTES, `must be at most ${MAX_FILENAME_BYTES} bytes`)
    .refine((v) => !CONTROL_OR_SEPARATOR.test(v), 'must not contain control characters, / or \\')
    .refine((v) => v !== '.' && v !== '..', 'must be a file name'),
  // A JWT subject as the IdP issued it (an admin finalizing on that user's behalf).
  userId: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_SUBJECT_LENGTH, `must be at most ${MAX_SUBJECT_LENGTH} characters`)
    .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'must not contain control characters')
    .optional(),
  metadata: userMetadataSchema.default({}),
});

export type FinalizeRequest = z.output<typeof schema>;

export function parseFinalizeRequest(body: unknown): FinalizeRequest {
  return parseStrictBody(schema, body);
}

/** A JSON object body against a strict schema: 400 naming the unknown field or the broken rule, never the value. */
export function parseStrictBody<S extends z.ZodType>(bodySchema: S, body: unknown): z.output<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequestError('request body must be a JSON object', 'invalid_body');
  const result = bodySchema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') throw new BadRequestError(`unknown field(s): ${issue.keys.join(', ')}`, 'unknown_field');
  const field = issue.path.join('.') || 'body';
  const message = issue.code === 'invalid_type' ? `must be ${issue.expected === 'record' ? 'an object' : `a ${issue.expected}`}` : issue.message;
  throw new BadRequestError(`${field}: ${message}`, 'invalid_field');
}
