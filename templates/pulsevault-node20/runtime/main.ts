/**
 * Entry point: `node main.js <compiled handler.js>`. This is the `fprocess` the
 * watchdog starts in the container, and what the local stack runs per function.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError, loadConfigOrExit } from '../../../shared/platform/config.js';
import type { FunctionSetup } from '../../../shared/platform/handler-contract.js';
import { stopWithParent } from '../../../shared/platform/lifecycle.js';
import { createLogger } from '../../../shared/platform/log.js';
import { startFunction, type RunningFunction } from './server.js';

const handlerPath = process.argv[2];
if (!handlerPath) {
  process.stderr.write('usage: main.js <handler.js>\n');
  process.exit(64);
}

const config = loadConfigOrExit();
const name = config.functionName ?? path.basename(path.dirname(handlerPath));
const log = createLogger(name, config.logLevel);
const mod = (await import(pathToFileURL(path.resolve(handlerPath)).href)) as { default?: FunctionSetup };
if (typeof mod.default !== 'function') {
  log.fatal('handler module must default-export defineFunction(...)');
  process.exit(70);
}

// Registered before start-up. A stop while the function is still starting may find it already serving
// (it listens before its last start-up step): the start-up then shuts it down as usual once it is up, and
// a start-up that never finishes is cut short after STARTING_STOP_MS.
const STARTING_STOP_MS = 5_000;
let running: RunningFunction | null = null;
let stopping = false;
let startingStop: NodeJS.Timeout | undefined;
const shutdown = (fn: RunningFunction) => void fn.shutdown().then(() => process.exit(0));
const stop = (reason: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ reason }, 'stopping');
  if (running) return shutdown(running);
  startingStop = setTimeout(() => process.exit(0), STARTING_STOP_MS);
};
process.once('SIGTERM', () => stop('SIGTERM'));
process.once('SIGINT', () => stop('SIGINT'));
stopWithParent(stop);

try {
  running = await startFunction(name, mod.default, config, log);
  log.info({ port: config.port }, 'function ready');
  if (stopping) {
    clearTimeout(startingStop);
    shutdown(running);
  }
} catch (err) {
  // Found only at set-up (a KEK that does not open the key store): one line, as for a bad variable.
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(78); // EX_CONFIG
  }
  log.fatal({ err }, 'function failed to start');
  process.exit(1);
}
