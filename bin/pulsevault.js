#!/usr/bin/env node
/**
 * `pulsevault` (package.json "bin"): the operator CLI on a developer's machine.
 * Runs the compiled CLI (dist/scripts/pulsevault.js) and builds it first only when
 * dist is missing or older than a source file, so a run costs node's start-up,
 * not tsc's. Local defaults match `npm start` (services/devstack/local-defaults.ts).
 * Containers run dist/scripts/pulsevault.js directly with their own settings.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ENTRY = path.join(ROOT, 'dist/scripts/pulsevault.js');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');

/** Newest mtime of the sources tsconfig.build.json compiles (its `include` roots). */
function newestSourceMtime() {
  const { include } = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8'));
  let newest = 0;
  for (const root of new Set(include.map((glob) => glob.split('/')[0]))) {
    const dir = path.join(ROOT, root);
    if (!existsSync(dir)) continue;
    for (const file of readdirSync(dir, { recursive: true })) {
      if (file.endsWith('.ts')) newest = Math.max(newest, statSync(path.join(dir, file)).mtimeMs);
    }
  }
  return newest;
}

// tsc rewrites every output on a build, so the entry's mtime is the build's.
const stale = !existsSync(ENTRY) || (existsSync(TSC) && newestSourceMtime() > statSync(ENTRY).mtimeMs);
if (stale) {
  process.stderr.write('pulsevault: building (sources changed since the last build)\n');
  // stdout belongs to the command (JSON lines): the compiler reports on stderr.
  const build = spawnSync(process.execPath, [TSC, '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  if (build.status !== 0) {
    process.stderr.write('pulsevault: the build failed (see above)\n');
    process.exit(70); // EX_SOFTWARE
  }
}

const { applyLocalDefaults } = await import(pathToFileURL(path.join(ROOT, 'dist/services/devstack/local-defaults.js')).href);
applyLocalDefaults(process.env);
await import(pathToFileURL(ENTRY).href);
