/**
 * The one id form: a lowercase RFC 9562 UUID, as crypto.randomUUID makes it.
 * PulseVault names videos and uploads itself, so every id that comes back from
 * outside (URL segments, request bodies, tokens, queued jobs, audit events,
 * directory names) is checked against this one pattern; an id valid in one
 * place is valid in all.
 */
import { randomUUID } from 'node:crypto';

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function newId(): string {
  return randomUUID();
}

export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}
