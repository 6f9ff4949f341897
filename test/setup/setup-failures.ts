/**
 * A reporter beside the default one: a test that was meant to run but did not
 * (its file's or suite's beforeAll threw, e.g. a stack that never came up) is
 * listed as a failure, not left among the "skipped". Tests left out on purpose
 * (`-t`, `.skip`) have another mode and are not counted.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SetupFailures implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const notRun = testModules.flatMap((m) =>
      [...m.children.allTests()].filter((t) => t.options.mode === 'run' && t.result().state === 'skipped').map((t) => `${m.moduleId.replace(`${process.cwd()}/`, '')} > ${t.fullName}`),
    );
    if (notRun.length === 0) return;
    process.stderr.write(`\nFAILED: ${notRun.length} test(s) did not run because their setup failed (see the suite errors above):\n${notRun.map((n) => `  ✗ ${n}`).join('\n')}\n`);
    process.exitCode = 1;
  }
}
