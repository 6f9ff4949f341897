/**
 * `pulsevault <command> [args]` — operator tools. Each command is a module in
 * scripts/commands/<command>.ts exporting `run(args): Promise<number>` (the exit code)
 * and `summary` (one line for the help text).
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../shared/platform/config.js';

interface Command {
  summary: string;
  run(args: string[]): Promise<number>;
}

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'commands');
const available = readdirSync(dir)
  .filter((f) => f.endsWith('.js'))
  .map((f) => f.slice(0, -3))
  .sort();

const [name, ...args] = process.argv.slice(2);
if (!name || name === '--help' || name === 'help' || !available.includes(name)) {
  const width = Math.max(...available.map((c) => c.length)) + 1;
  const lines = await Promise.all(available.map(async (c) => `  ${c.padEnd(width)} ${((await import(`./commands/${c}.js`)) as Command).summary}`));
  process.stderr.write(`${name && !available.includes(name) && name !== '--help' && name !== 'help' ? `unknown command: ${name}\n` : ''}usage: pulsevault <command> [args]\n${lines.join('\n')}\n`);
  process.exit(name && name !== '--help' && name !== 'help' ? 64 : 0);
}
/** Exit statuses for what the operator must fix (sysexits.h), answered with one line instead of a stack. */
const OPERATOR_ERRORS: Record<string, number> = { ENOENT: 66, ENOTDIR: 66, EACCES: 77, EPERM: 77 };

const command = (await import(`./commands/${name}.js`)) as Command;
try {
  process.exit(await command.run(args));
} catch (err) {
  if (err instanceof ConfigError) {
    // Found past start-up (a KEK the key store does not accept): one line, as loadConfigOrExit says it.
    process.stderr.write(`pulsevault ${name}: ${err.message}\n`);
    process.exit(78); // EX_CONFIG
  }
  const { code, path: where } = err as NodeJS.ErrnoException;
  const status = code === undefined ? undefined : OPERATOR_ERRORS[code];
  if (status === undefined || where === undefined) throw err;
  process.stderr.write(`pulsevault ${name}: cannot read ${where} (${code}); is MEDIA_ROOT (or VIDEO_DIR/AUDIT_DIR) right?\n`);
  process.exit(status);
}
