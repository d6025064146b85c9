// The browser tests' runner: named checks, each timed and reported like `cargo test` lines
// (scripts/test.sh adds up the closing `test result:` lines).
export function checks(prefix) {
  const counts = { passed: 0, failed: 0 };
  // HVQ_WEB_FILTER=substring runs only the checks whose name contains it (as `cargo test NAME`).
  const filter = process.env.HVQ_WEB_FILTER;
  async function check(name, fn) {
    if (filter && !name.includes(filter)) {
      counts.filtered = (counts.filtered ?? 0) + 1;
      return;
    }
    const t0 = Date.now();
    const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
    try {
      await fn();
      counts.passed++;
      console.log(`test ${prefix}::${name} ... ok (${secs()} s)`);
    } catch (e) {
      counts.failed++;
      console.log(`test ${prefix}::${name} ... FAILED (${secs()} s)\n${e.stack ?? e}`);
    }
  }
  // The closing line; exits non-zero when a check failed.
  function finish() {
    const { passed, failed } = counts;
    const filtered = counts.filtered ? `; ${counts.filtered} filtered out` : '';
    console.log(`test result: ${failed ? 'FAILED' : 'ok'}. ${passed} passed; ${failed} failed${filtered}`);
    process.exit(failed ? 1 : 0);
  }
  return { check, counts, finish };
}
