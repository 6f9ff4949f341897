/**
 * The edge's decryption module (./decrypt-module/) for the nginx of this machine, built the way
 * Debian builds its own dynamic modules: its nginx-dev source tree, configured with the flags
 * its nginx was built with (so the module's signature matches), then `make modules`. Built once
 * per module source and nginx build, under dist/ (about 20 s on 2 cores); `npm start`, the tests
 * and the benchmark load it from there. The pod's image builds it for its own nginx
 * (services/media-edge/Dockerfile).
 *
 * Without nginx-dev (or with an nginx of another version than its source) there is no module:
 * the edge then leaves encrypted originals to the stream function, which decrypts them itself.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../devstack/local-defaults.js';

const run = promisify(execFile);

export const MODULE_SOURCE = path.join(REPO_ROOT, 'services/media-edge/decrypt-module');
export const MODULE_FILE = 'ngx_http_pulsevault_decrypt_module.so';
/** Where Debian's nginx-dev puts the source tree its nginx was built from. */
const DEBIAN_SOURCE = '/usr/share/nginx/src';

export type DecryptModule = { path: string } | { missing: string };

const versionOf = (text: string) => /nginx\/(\d+\.\d+\.\d+)/.exec(text)?.[1] ?? /NGINX_VERSION\s+"([\d.]+)"/.exec(text)?.[1] ?? null;

/** The module for `nginx` (its path), built if this source and this nginx build have none yet. */
export async function localDecryptModule(nginx: string): Promise<DecryptModule> {
  if (!existsSync(path.join(DEBIAN_SOURCE, 'configure')) || !existsSync(path.join(DEBIAN_SOURCE, 'conf_flags'))) {
    return { missing: 'nginx-dev is not installed (apt-get install nginx-dev)' };
  }
  const built = (await run(nginx, ['-V'])).stderr;
  const binary = versionOf(built);
  const source = versionOf(readFileSync(path.join(DEBIAN_SOURCE, 'src/core/nginx.h'), 'utf8'));
  if (!binary || binary !== source) return { missing: `nginx-dev's source (${source}) is not this nginx (${binary})` };
  const hash = createHash('sha256').update(built);
  for (const name of readdirSync(MODULE_SOURCE).sort()) hash.update(name).update(readFileSync(path.join(MODULE_SOURCE, name)));
  const target = path.join(REPO_ROOT, 'dist/media-edge', hash.digest('hex').slice(0, 16), MODULE_FILE);
  if (existsSync(target)) return { path: target };

  // Beside the target, so the rename below never crosses file systems.
  await mkdir(path.dirname(path.dirname(target)), { recursive: true });
  const work = await mkdtemp(path.join(path.dirname(path.dirname(target)), '.build-'));
  try {
    await cp(DEBIAN_SOURCE, path.join(work, 'src'), { recursive: true });
    const script = `set -e
. ./conf_flags
./configure --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" "\${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$1" --builddir="$2"
make -f "$2/Makefile" modules`;
    try {
      await run('bash', ['-c', script, 'build', MODULE_SOURCE, path.join(work, 'build')], { cwd: path.join(work, 'src'), maxBuffer: 64 * 1024 * 1024 });
    } catch (err) {
      const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
      return { missing: `the module did not build: ${`${stdout}\n${stderr}`.trim().split('\n').slice(-5).join(' | ')}` };
    }
    await mkdir(path.dirname(target), { recursive: true });
    // Whole or not at all: a concurrent build renames an identical file.
    await rename(path.join(work, 'build', MODULE_FILE), target);
    // Builds of earlier sources or another nginx are never loaded again.
    const builds = path.dirname(path.dirname(target));
    for (const name of readdirSync(builds)) if (name !== path.basename(path.dirname(target)) && !name.startsWith('.')) await rm(path.join(builds, name), { recursive: true, force: true });
    return { path: target };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
