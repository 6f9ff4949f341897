import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/build.ts'],
    setupFiles: ['test/setup/stack-diagnostics.ts'],
    pool: 'forks',
    // Integration tests run real processes (functions, Redis, ffmpeg) on a 2-core machine.
    maxWorkers: 2,
    testTimeout: 60_000,
    // Above STACK_START_DEADLINE_MS (test/helpers/stack.ts) plus a minute: a slow stack fails with its own message, not the hook's.
    hookTimeout: 300_000,
    // setup-failures: tests whose beforeAll threw count as failed, not skipped.
    reporters: ['default', './test/setup/setup-failures.ts'],
  },
});
