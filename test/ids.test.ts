/** One id form (shared/platform/ids.ts): every place that checks an id from outside agrees on it. */
import { describe, expect, it } from 'vitest';
import { submittedEventSchema } from '../shared/audit/entry.js';
import { parseFinalizeRequest } from '../shared/finalize/request.js';
import { isUuid, newId } from '../shared/platform/ids.js';
import { createTokenCodec } from '../shared/delivery/tokens.js';
import { transcodeJobSchema } from '../shared/transcode/queue.js';
import { isUploadId } from '../shared/uploads/ids.js';
import { isVideoId } from '../shared/video/store.js';

const codec = createTokenCodec({ secret: 'x'.repeat(32), maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
const event = (videoId: string) => ({ category: 'access', action: 'stream', outcome: 'granted', reason: null, actor: null, videoId, clientIp: null, requestId: null, occurredAt: '2026-01-01T00:00:00.000Z' });

/** Every check of an id from outside, as a yes/no. */
const checks: Record<string, (id: string) => boolean> = {
  isUuid,
  isVideoId,
  isUploadId,
  'finalize body uploadId': (id) => {
    try {
      parseFinalizeRequest({ uploadId: id, filename: 'a.mp4' });
      return true;
    } catch {
      return false;
    }
  },
  'token videoId': (id) => {
    try {
      codec.sign({ videoId: id, exp: Math.floor(Date.now() / 1000) + 60, scope: 'original.mp4' });
      return true;
    } catch {
      return false;
    }
  },
  'transcode job videoId': (id) => transcodeJobSchema.safeParse({ videoId: id, attempt: 1, enqueuedAt: 'now', traceId: 't' }).success,
  'audit event videoId': (id) => submittedEventSchema.safeParse(event(id)).success,
};

const VALID = [newId(), '6f1c1a43-1f6e-4f57-9d7e-0d3b1b7a2c11', '01890a5d-ac96-774b-bcce-b302099a8057' /* v7 */, 'c232ab00-9414-11ec-b3c8-9f6bdeced846' /* v1 */];
const INVALID = [
  '',
  '6F1C1A43-1F6E-4F57-9D7E-0D3B1B7A2C11', // upper case: we never issue it
  '6f1c1a43-1f6e-0f57-9d7e-0d3b1b7a2c11', // version 0
  '6f1c1a43-1f6e-4f57-cd7e-0d3b1b7a2c11', // not the RFC variant
  '6f1c1a431f6e4f579d7e0d3b1b7a2c11', // no hyphens
  '6f1c1a43-1f6e-4f57-9d7e-0d3b1b7a2c11\n',
  '../6f1c1a43-1f6e-4f57-9d7e-0d3b1b7a2c11',
  '00000000-0000-0000-0000-000000000000',
];

describe('ids', () => {
  it.each(Object.keys(checks))('%s accepts exactly the one id form', (name) => {
    const check = checks[name]!;
    for (const id of VALID) expect(check(id), `${name}(${JSON.stringify(id)})`).toBe(true);
    for (const id of INVALID) expect(check(id), `${name}(${JSON.stringify(id)})`).toBe(false);
  });

  it('newId makes distinct ids of that form', () => {
    const ids = new Set(Array.from({ length: 100 }, newId));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(isUuid(id)).toBe(true);
  });
});
