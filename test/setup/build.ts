/**
 * Integration tests run the compiled stack (as `npm start` does): build it once per run, and the
 * edge's decryption module once (services/media-edge/build-module.ts), before stacks start in parallel.
 */
import { execFileSync } from 'node:child_process';
import { localDecryptModule } from '../../services/media-edge/build-module.js';
import { which } from '../../services/devstack/which.js';

export default async function setup(): Promise<void> {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  const nginx = which('nginx');
  const module = nginx ? await localDecryptModule(nginx) : { missing: 'nginx is not installed' };
  if ('missing' in module) console.warn(`media edge decryption module: ${module.missing}`);
}
