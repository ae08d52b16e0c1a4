import { setTimeout as sleep } from 'node:timers/promises';
import { machineBusyMs } from './proc-stats.js';

const SAMPLE_MS = 1_000;
/** Busy CPU, in % of one CPU, below which the machine counts as quiet (kernel and daemons). */
const QUIET_BELOW_PERCENT = 15;

/**
 * On a shared machine (editors, test runs), waits until the whole machine has been nearly idle
 * for one second, at most maxWaitMs. Resolves to the last busy % seen, so the caller can say it
 * went ahead on a busy machine; without /proc it cannot tell and resolves at once.
 */
export async function waitForQuiet(maxWaitMs: number): Promise<{ quiet: boolean; busyPercent: number | null }> {
  const deadline = performance.now() + maxWaitMs;
  for (;;) {
    const before = machineBusyMs();
    const t0 = performance.now();
    await sleep(SAMPLE_MS);
    const after = machineBusyMs();
    if (before === null || after === null) return { quiet: true, busyPercent: null };
    const busyPercent = ((after - before) / (performance.now() - t0)) * 100;
    const quiet = busyPercent < QUIET_BELOW_PERCENT;
    if (quiet || performance.now() >= deadline) return { quiet, busyPercent };
  }
}
