import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/build.ts'],
    setupFiles: ['test/setup/stack-diagnostics.ts'],
    pool: 'forks',
    // Integration tests run real processes (functions, Redis, ffmpeg) on a 2-core machine.
    maxWorkers: 2,
    // At least 10× the slowest test's time on a quiet machine (about 25 s), so a loaded one (CI beside
    // another suite) passes; a test with its own deadline names it beside the test.
    testTimeout: 300_000,
    // Above STACK_START_DEADLINE_MS (test/helpers/stack.ts) plus a minute: a slow stack fails with its own message, not the hook's.
    hookTimeout: 300_000,
    // setup-failures: tests whose beforeAll threw count as failed, not skipped.
    reporters: ['default', './test/setup/setup-failures.ts'],
  },
});
