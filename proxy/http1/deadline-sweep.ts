/** Something the sweep looks at once per tick while it is in flight. */
export interface Swept {
  /** Called once per tick with performance.now(); returns false once the item is done with the sweep. */
  check(nowMs: number): boolean;
}

/** One shared timer for the deadlines of every in-flight exchange. */
export interface DeadlineSweep {
  add(item: Swept): void;
  delete(item: Swept): void;
  /** Items in the sweep now. */
  readonly size: number;
  close(): void;
}

/** Coarsest and finest tick: a deadline fires at most one tick late. */
const MAX_TICK_MS = 1000;
const MIN_TICK_MS = 10;
/** The tick is this fraction of the shortest timeout, so a timeout fires at most ~10% late. */
const TICK_FRACTION = 10;

/** The tick for a set of timeouts: a tenth of the shortest, within [10 ms, 1 s]. */
export function sweepTickMs(...timeoutsMs: number[]): number {
  return Math.max(MIN_TICK_MS, Math.min(MAX_TICK_MS, Math.floor(Math.min(...timeoutsMs) / TICK_FRACTION)));
}

/**
 * Response and idle deadlines checked by one interval, instead of a setTimeout (and a socket
 * timer with its listeners) per request: adding and removing an exchange is a Set operation.
 * The interval runs only while something is in flight and does not keep the process alive.
 */
export function createDeadlineSweep(tickMs: number): DeadlineSweep {
  const items = new Set<Swept>();
  let timer: NodeJS.Timeout | null = null;

  function sweep(): void {
    const now = performance.now();
    // Deleting the current entry while iterating a Set is safe.
    for (const item of items) if (!item.check(now)) items.delete(item);
    if (items.size === 0) stop();
  }

  function stop(): void {
    if (timer === null) return;
    clearInterval(timer);
    timer = null;
  }

  return {
    add(item) {
      items.add(item);
      if (timer === null) {
        timer = setInterval(sweep, tickMs);
        timer.unref();
      }
    },
    delete(item) {
      items.delete(item);
    },
    get size() {
      return items.size;
    },
    close() {
      items.clear();
      stop();
    },
  };
}
