/**
 * Reconnect delays: exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"), so a fleet of sidecars that lost the collector together does not return in lockstep.
 */

/** A delay in [0, min(maxMs, baseMs * 2^attempt)). */
export function fullJitterMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * After a Refusal: retrying fast will not fix it (a bad token, a pinned key, a fork), so wait
 * between half the cap and the cap, still jittered.
 */
export function refusalDelayMs(maxMs: number, random: () => number = Math.random): number {
  return Math.floor(maxMs / 2 + random() * (maxMs / 2));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
