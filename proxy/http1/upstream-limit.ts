/**
 * Requests in flight per upstream, across both listeners (they share one connection pool). The
 * pool holds --max-sockets-per-upstream of them; past that they wait in the engine's queue, which
 * by itself has no bound: clients that hold sockets (slow uploads, an upstream that hangs) would
 * let it grow without limit. Past the pool plus --max-pending-per-upstream, a request gets 503
 * (AUDITMESH_OVERLOAD) at once, recorded as `overload`, instead of waiting behind the others.
 */
export interface UpstreamLimit {
  /** Counts a request in; false (and nothing counted) when the upstream is at its limit. */
  enter(upstream: string): boolean;
  leave(upstream: string): void;
  /** Requests in flight an upstream may have; Infinity without a bound. */
  readonly limit: number;
}

export function createUpstreamLimit(maxSockets: number, maxPending: number): UpstreamLimit {
  const limit = maxPending > 0 ? maxSockets + maxPending : Number.POSITIVE_INFINITY;
  const inFlight = new Map<string, number>();
  return {
    limit,
    enter(upstream) {
      const n = inFlight.get(upstream) ?? 0;
      if (n >= limit) return false;
      inFlight.set(upstream, n + 1);
      return true;
    },
    leave(upstream) {
      const n = (inFlight.get(upstream) ?? 1) - 1;
      if (n <= 0) inFlight.delete(upstream);
      else inFlight.set(upstream, n);
    },
  };
}
