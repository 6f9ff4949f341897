/**
 * Defaults for running PulseVault on a developer's machine, shared by `npm start`
 * and the `pulsevault` CLI launcher (bin/pulsevault.js) so both see the same data.
 * The container images keep the production defaults (MEDIA_ROOT=/mnt/media) and
 * always get their secrets from the deployment.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, whether this file runs compiled (dist/services/devstack/) or from source (tests). */
const ABOVE_SERVICES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const REPO_ROOT = path.basename(ABOVE_SERVICES) === 'dist' ? path.dirname(ABOVE_SERVICES) : ABOVE_SERVICES;

/** Where a local run keeps its media unless MEDIA_ROOT says otherwise. */
export const LOCAL_MEDIA_ROOT = path.join(REPO_ROOT, 'data');

/** The development audit signing key `npm start` keeps beside the data when AUDIT_SIGNING_KEY is unset. */
export function devAuditSigningKeyFile(mediaRoot: string): string {
  return path.join(mediaRoot, '.dev-audit-signing-key');
}

/**
 * Fills in what a local command needs and the environment leaves unset: MEDIA_ROOT
 * (./data, as `npm start`) and, when `npm start` made one, its development audit
 * signing key, so `pulsevault audit verify` checks the chain the local stack signed.
 */
export function applyLocalDefaults(env: NodeJS.ProcessEnv): void {
  if (env.NODE_ENV === 'production') return;
  env.MEDIA_ROOT ||= LOCAL_MEDIA_ROOT;
  const keyFile = devAuditSigningKeyFile(env.MEDIA_ROOT);
  if (!env.AUDIT_SIGNING_KEY && existsSync(keyFile)) env.AUDIT_SIGNING_KEY = readFileSync(keyFile, 'utf8').trim();
}
