/**
 * Something the sweep looks at once per tick while it is in flight. The sweep links it in place
 * through its two link fields (null while it is in no sweep): adding and removing allocate nothing.
 */
export interface Swept {
  /** Called once per tick with performance.now(); returns false once the item is done with the sweep. */
  check(nowMs: number): boolean;
  sweepPrev: Swept | null;
  sweepNext: Swept | null;
}

/** One shared timer for the deadlines of every in-flight exchange. */
export interface DeadlineSweep {
  /** Adds an item; one already in a sweep stays where it is. */
  add(item: Swept): void;
  /** Removes the item and clears its links; an item in no sweep is left as it is. */
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
 * timer with its listeners) per request.
 *
 * The items are a doubly linked list through their own fields, not a Set: once a full GC had
 * moved a Set into the old generation, every scavenge kept and promoted the whole of the requests
 * in flight (bench/README.md, "Figures behind the code").
 * A Set that is rehashed keeps its old table linked to the new one (for iterators), so a dead
 * old table held the exchanges it had listed, and each of them its request. Here a removed item
 * keeps no link to any other, so a finished exchange holds nothing that came after it.
 * The interval runs only while something is in flight and does not keep the process alive.
 */
export function createDeadlineSweep(tickMs: number): DeadlineSweep {
  // A ring through a sentinel: the first item is head.sweepNext, the last head.sweepPrev.
  const head: Swept = { check: () => true, sweepPrev: null, sweepNext: null };
  head.sweepPrev = head.sweepNext = head;
  let size = 0;
  let timer: NodeJS.Timeout | null = null;

  function unlink(item: Swept): void {
    item.sweepPrev!.sweepNext = item.sweepNext;
    item.sweepNext!.sweepPrev = item.sweepPrev;
    item.sweepPrev = item.sweepNext = null;
    size--;
  }

  function sweep(): void {
    const now = performance.now();
    // Taken first: a check may end its own exchange, or another one, and unlink it.
    const due: Swept[] = [];
    for (let item = head.sweepNext!; item !== head; item = item.sweepNext!) due.push(item);
    for (const item of due) if (item.sweepNext !== null && !item.check(now) && item.sweepNext !== null) unlink(item);
    if (size === 0) stop();
  }

  function stop(): void {
    if (timer === null) return;
    clearInterval(timer);
    timer = null;
  }

  return {
    add(item) {
      if (item.sweepNext !== null) return;
      item.sweepPrev = head.sweepPrev;
      item.sweepNext = head;
      head.sweepPrev!.sweepNext = item;
      head.sweepPrev = item;
      size++;
      if (timer === null) {
        timer = setInterval(sweep, tickMs);
        timer.unref();
      }
    },
    delete(item) {
      if (item.sweepNext !== null) unlink(item);
    },
    get size() {
      return size;
    },
    close() {
      while (head.sweepNext !== head) unlink(head.sweepNext!);
      stop();
    },
  };
}
