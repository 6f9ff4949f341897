/**
 * The handler contract of our OpenFaaS template (templates/pulsevault-node20).
 *
 * A function's handler.ts default-exports `defineFunction(setup)`. The runtime
 * calls `setup` once at start-up with the parsed configuration, then calls the
 * returned handler with the raw Node request and response: bodies stream in and
 * out untouched. Throw an AppError (shared/platform/errors.ts) to answer an error.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from './config.js';
import type { Logger } from './log.js';

export interface FunctionContext {
  name: string;
  config: Config;
  log: Logger;
  /** Register clean-up (close Redis, stop timers) run after in-flight requests finish on SIGTERM. */
  onShutdown(hook: () => Promise<void> | void): void;
}

export interface RequestContext {
  requestId: string;
  /** W3C `traceparent` of this request (the caller's trace continued, or a new one), to hand on to queue jobs. */
  traceparent: string;
  log: Logger;
  /** Route template for metrics (e.g. `PATCH /uploads/:id`); low cardinality, never a raw path. */
  route: string;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<void>;
export type FunctionSetup = (fc: FunctionContext) => Promise<Handler> | Handler;

export function defineFunction(setup: FunctionSetup): FunctionSetup {
  return setup;
}
