// The fresh-memory benchmark (bench/fresh-memory.ts), run with a few copies, so it cannot rot
// unnoticed. No speed is asserted: only that both ways were timed for every size and that the
// ratio and the price of a fault it prints are the ones its own columns give.
import test from 'ava';
import { startProcess } from './helpers/child.js';

test('bench:memory times reused and fresh copies of each size and prices a page fault from them', async (t) => {
  t.timeout(60_000);
  // Sizes whose reused copy takes microseconds, so rounding to one decimal cannot move the ratio much.
  const env = { ...process.env, COPIES: '20', SIZES: '262144,1000000' };
  const { code, stdout, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/fresh-memory.ts'], env).done;
  t.is(code, 0, stderr);
  const rows = [...stdout.matchAll(/^([\d,]+) +([\d.]+) +([\d.]+) +([\d.]+)x +([\d.]+) +([\d.]+|n\/a)$/gm)];
  t.deepEqual(rows.map((r) => r[1]), ['262,144', '1,000,000'], stdout);
  for (const [, , reused, fresh, ratio] of rows) {
    t.true(Number(reused) > 0 && Number(fresh) > 0, stdout);
    // Printed to one decimal each: the ratio is checked against the columns it comes from, loosely.
    t.true(Math.abs(Number(ratio) - Number(fresh) / Number(reused)) <= 0.1 * Number(ratio) + 0.5, stdout);
  }
  t.regex(stdout, /^262,144 bytes: fresh memory [\d.]+x the cost of reused, (about [\d.]+ µs a page fault|no page faults to price)$/m);
  t.regex(stdout, /^20 copies per size and way; \d+ CPUs; node v\d+/m);
});

test('bench:memory refuses sizes that are not whole numbers of bytes', async (t) => {
  const env = { ...process.env, SIZES: '4096,big' };
  const { code, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/fresh-memory.ts'], env).done;
  t.not(code, 0);
  t.regex(stderr, /SIZES: whole numbers of bytes, comma-separated, not 4096,big/);
});
