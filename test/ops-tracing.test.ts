import { describe, expect, it } from 'vitest';
import { continueTrace, formatTraceparent, parseTraceparent } from '../shared/platform/tracing.js';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('W3C traceparent', () => {
  it('parses the spec example and formats it back', () => {
    const ctx = parseTraceparent(VALID);
    expect(ctx).toEqual({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true });
    expect(formatTraceparent(ctx!)).toBe(VALID);
  });

  it.each([
    ['absent', undefined],
    ['empty', ''],
    ['short trace id', '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'],
    ['uppercase hex', VALID.toUpperCase()],
    ['all-zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['all-zero span id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'],
    ['forbidden version ff', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['version 00 with extra fields', `${VALID}-extra`],
    ['garbage', 'hello'],
  ])('rejects %s', (_what, header) => {
    expect(parseTraceparent(header)).toBeNull();
  });

  it('accepts a future version with extra fields, reading the first four', () => {
    expect(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more')).toEqual({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      sampled: false,
    });
  });

  it("continues the caller's trace with a new span, keeping its sampling decision", () => {
    const next = continueTrace('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00');
    expect(next.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(next.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(next.spanId).not.toBe('00f067aa0ba902b7');
    expect(next.sampled).toBe(false);
    expect(parseTraceparent(formatTraceparent(next))).toEqual(next);
  });

  it('starts a new sampled trace when there is no valid parent', () => {
    const a = continueTrace('nonsense');
    const b = continueTrace(null);
    expect(a.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(a.traceId).not.toBe(b.traceId);
    expect(a.sampled).toBe(true);
  });
});
