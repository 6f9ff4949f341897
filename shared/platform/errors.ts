/**
 * Typed errors and their one mapping to HTTP. Handlers throw these; the runtime
 * (templates/pulsevault-node20/runtime) turns any thrown value into a JSON body
 * `{error, message, requestId}` through `toHttpError`, so no handler writes an
 * error response by hand.
 */
import { isRedisUnavailable } from './redis.js';

export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequestError extends AppError {
  constructor(message: string, code = 'bad_request') {
    super(400, code, message);
  }
}

export class UnauthorizedError extends AppError {
  constructor(message: string, challenge = 'Bearer realm="pulsevault"') {
    super(401, 'unauthorized', message, { 'WWW-Authenticate': challenge });
  }
}

export class ForbiddenError extends AppError {
  constructor(message: string, code = 'forbidden') {
    super(403, code, message);
  }
}

export class NotFoundError extends AppError {
  constructor(message: string) {
    super(404, 'not_found', message);
  }
}

export class MethodNotAllowedError extends AppError {
  constructor(allowed: readonly string[]) {
    super(405, 'method_not_allowed', `allowed methods: ${allowed.join(', ')}`, { Allow: allowed.join(', ') });
  }
}

export class ConflictError extends AppError {
  constructor(message: string, code = 'conflict') {
    super(409, code, message);
  }
}

export class PayloadTooLargeError extends AppError {
  constructor(message: string) {
    super(413, 'payload_too_large', message);
  }
}

export class RangeNotSatisfiableError extends AppError {
  constructor(size: number, headers: Record<string, string> = {}) {
    super(416, 'range_not_satisfiable', 'requested range not satisfiable', { ...headers, 'Content-Range': `bytes */${size}` });
  }
}

export class UnprocessableError extends AppError {
  constructor(message: string, code = 'unprocessable') {
    super(422, code, message);
  }
}

export class NotImplementedError extends AppError {
  constructor(message = 'not implemented yet') {
    super(501, 'not_implemented', message);
  }
}

export class ServiceUnavailableError extends AppError {
  constructor(message: string, code = 'unavailable') {
    super(503, code, message, { 'Retry-After': '1' });
  }
}

export interface HttpError {
  status: number;
  code: string;
  message: string;
  headers: Record<string, string>;
  /** true when the error is ours; anything else is a bug and is logged with its stack. */
  expected: boolean;
}

/** The one place where a thrown value becomes an HTTP status and a public message. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof AppError) {
    return { status: err.status, code: err.code, message: err.message, headers: err.headers, expected: true };
  }
  // Any Redis call on a request path may meet an outage or a freeze: a clear 503, whichever call it was.
  if (isRedisUnavailable(err)) {
    return { status: 503, code: 'redis_unavailable', message: 'Redis is unavailable; retry later', headers: { 'Retry-After': '1' }, expected: true };
  }
  // Never echo an unexpected error's message: it may carry paths or PHI.
  return { status: 500, code: 'internal', message: 'internal server error', headers: {}, expected: false };
}
