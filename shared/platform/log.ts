/**
 * JSON-lines logging (pino). Log lines carry ids only: never titles, descriptions,
 * filenames, tokens, secrets or raw IPs. Known secret-bearing keys are redacted as
 * a second line of defence.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'token',
  'authorization',
  'password',
  'secret',
  'hmacSecret',
  '*.token',
  '*.authorization',
  '*.password',
  '*.secret',
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
];

/** `fd` 2 sends the lines to stderr (CLI commands keep stdout for their result). */
export function createLogger(service: string, level: string = 'info', fd: 1 | 2 = 1): Logger {
  return pino({
    level,
    base: { function: service },
    messageKey: 'msg',
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACT, censor: '[redacted]' },
  }, pino.destination(fd));
}
