/**
 * Fan-out of committed records to live subscribers (the admin tail endpoint, tests). Runs after
 * the journal commit, never before: a subscriber only ever sees what is in the journal.
 */

export interface LiveFeed<T> {
  /** Adds a listener; returns its unsubscribe function (idempotent). */
  subscribe(listener: (item: T) => void): () => void;
  /** Delivers one item to every listener. A throwing listener is reported and skipped, never rethrown. */
  publish(item: T): void;
  /** Listener count: producers skip building items nobody will read. */
  readonly size: number;
}

export interface LiveFeedOptions {
  /** Called with whatever a listener threw, at most once per listener. */
  onListenerError?: (err: unknown) => void;
}

export function createLiveFeed<T>(opts: LiveFeedOptions = {}): LiveFeed<T> {
  const listeners = new Set<(item: T) => void>();
  // A listener that throws on every record would otherwise flood the log at the record rate.
  const reported = new WeakSet<(item: T) => void>();

  function publish(item: T): void {
    // Deleting from a Set while iterating it is safe; a listener added mid-publish also sees it.
    for (const listener of listeners) {
      try {
        listener(item);
      } catch (err) {
        if (reported.has(listener)) continue;
        reported.add(listener);
        opts.onListenerError?.(err);
      }
    }
  }

  return {
    subscribe(listener) {
      // Wrapped, so the same function subscribed twice is two subscriptions with two unsubscribes.
      const entry = (item: T): void => listener(item);
      listeners.add(entry);
      return () => {
        listeners.delete(entry);
      };
    },
    publish,
    get size() {
      return listeners.size;
    },
  };
}
