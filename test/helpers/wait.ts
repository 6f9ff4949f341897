/** Poll a condition until it holds or the deadline passes (never a bare sleep). */
export async function waitFor<T>(check: () => Promise<T | false | undefined | null> | T | false | undefined | null, timeoutMs = 10_000, what = 'condition', intervalMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
