/**
 * W3C Trace Context (`traceparent`, https://www.w3.org/TR/trace-context/) so one
 * upload can be followed gateway → function → queue job → transcoder in Tempo
 * once an OpenTelemetry exporter is configured. We only carry the header: each
 * hop continues the caller's trace with a span id of its own, or starts one.
 */
import { randomBytes } from 'node:crypto';

export interface TraceContext {
  traceId: string;
  spanId: string;
  sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The trace context of a `traceparent` header (lowercase hex, as the spec demands), or null when absent or invalid: then start a new trace. */
export function parseTraceparent(header: string | null | undefined): TraceContext | null {
  const m = TRACEPARENT.exec((header ?? '').trim());
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  // Version ff is forbidden; version 00 has exactly four fields; all-zero ids are invalid.
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

export function formatTraceparent(ctx: TraceContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.sampled ? '01' : '00'}`;
}

/** This hop's context: the caller's trace with a new span id, or a new sampled trace. */
export function continueTrace(header: string | null | undefined): TraceContext {
  const parent = parseTraceparent(header);
  return {
    traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
    spanId: randomBytes(8).toString('hex'),
    sampled: parent?.sampled ?? true,
  };
}
