/**
 * Polls until `check` passes, or throws its last error after the deadline: what an instance
 * learns through the database (a notification, a reconnection), it learns a moment later. The
 * deadline only bounds a failure: a passing check returns as soon as it passes, so it is wide
 * enough for a machine that runs other work beside the suite.
 */
export async function eventually(check: () => unknown, timeoutMs = 30_000, intervalMs = 20): Promise<void> {
  // performance.now(): a test may stop Date.now() (see pool.e2e-spec.ts).
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }
}
