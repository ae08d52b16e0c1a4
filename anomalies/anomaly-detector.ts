/**
 * Spike and first-seen detection per edge (peer service × direction), on the event loop at
 * O(1) per exchange: a counter increment. Baselines are exponentially weighted moving averages
 * updated once per tick, so the cost does not grow with traffic.
 */

export type AnomalyKind = 'rate_spike' | 'error_spike' | 'first_seen_peer' | 'first_seen_method';

export interface Anomaly {
  kind: AnomalyKind;
  peer: string;
  direction: 'inbound' | 'outbound';
  /** What was observed (req/s or error ratio), and the baseline it was compared with. */
  observed?: number;
  baseline?: number;
  /** For first_seen_method: the method (gRPC `service/method`, or the HTTP method). */
  method?: string;
  message: string;
}

export interface AnomalyOptions {
  /** Length of one observation window. */
  intervalMs: number;
  /** No alert until the sidecar has watched traffic this long (baselines settle). */
  warmupMs: number;
  /** A window's rate above factor × baseline is a spike... */
  rateFactor: number;
  /** ...if it is also above this floor (req/s): a quiet edge going from 0.1 to 0.5 req/s is not one. */
  minRate: number;
  /** A window's error ratio above baseline + this is an error spike (with at least minRequests). */
  errorRatioDelta: number;
  minRequests: number;
  /** EWMA weight of the newest window. */
  alpha: number;
  /** Upper bound on remembered edges and methods (memory stays bounded under hostile input). */
  maxKeys: number;
  onAnomaly: (a: Anomaly) => void;
  onClear: (a: Pick<Anomaly, 'kind' | 'peer' | 'direction'>) => void;
}

interface Edge {
  peer: string;
  direction: 'inbound' | 'outbound';
  count: number;
  errors: number;
  rate?: number;
  errorRatio?: number;
  active: Set<AnomalyKind>;
}

export interface AnomalyDetector {
  /** `count` exchanges alike (the collector observes a batch's exchanges by group). */
  observe(peer: string, direction: 'inbound' | 'outbound', method: string, isError: boolean, count?: number): void;
  /** Closes the current window: compares with baselines, raises or clears, updates baselines. */
  tick(): void;
  close(): void;
}

export function createAnomalyDetector(opts: AnomalyOptions, now: () => number = () => performance.now()): AnomalyDetector {
  const edges = new Map<string, Edge>();
  const methods = new Set<string>();
  const startedAt = now();
  const warm = (): boolean => now() - startedAt >= opts.warmupMs;
  const timer = setInterval(() => detector.tick(), opts.intervalMs);
  timer.unref();

  const detector: AnomalyDetector = {
    observe(peer, direction, method, isError, count = 1) {
      const key = `${direction}|${peer}`;
      let edge = edges.get(key);
      if (edge === undefined) {
        if (edges.size >= opts.maxKeys) return;
        edge = { peer, direction, count: 0, errors: 0, active: new Set() };
        edges.set(key, edge);
        if (warm()) opts.onAnomaly({ kind: 'first_seen_peer', peer, direction, message: `first ${direction} exchange with ${peer}` });
      }
      edge.count += count;
      if (isError) edge.errors += count;
      const methodKey = `${key}|${method}`;
      if (!methods.has(methodKey) && methods.size < opts.maxKeys) {
        methods.add(methodKey);
        if (warm() && edge.rate !== undefined) opts.onAnomaly({ kind: 'first_seen_method', peer, direction, method, message: `first ${method} ${direction === 'outbound' ? 'to' : 'from'} ${peer}` });
      }
    },
    tick() {
      const seconds = opts.intervalMs / 1000;
      for (const edge of edges.values()) {
        const rate = edge.count / seconds;
        const errorRatio = edge.count === 0 ? 0 : edge.errors / edge.count;
        if (warm() && edge.rate !== undefined) judge(edge, rate, errorRatio);
        edge.rate = edge.rate === undefined ? rate : opts.alpha * rate + (1 - opts.alpha) * edge.rate;
        if (edge.count >= opts.minRequests || edge.errorRatio === undefined) {
          edge.errorRatio = edge.errorRatio === undefined ? errorRatio : opts.alpha * errorRatio + (1 - opts.alpha) * edge.errorRatio;
        }
        edge.count = 0;
        edge.errors = 0;
      }
    },
    close() {
      clearInterval(timer);
    },
  };

  function judge(edge: Edge, rate: number, errorRatio: number): void {
    const spike = rate > opts.minRate && rate > opts.rateFactor * edge.rate!;
    transition(edge, 'rate_spike', spike, rate, edge.rate!, `${edge.direction} rate with ${edge.peer} at ${rate.toFixed(1)} req/s, baseline ${edge.rate!.toFixed(1)} req/s`);
    const errorSpike = edge.count >= opts.minRequests && errorRatio > edge.errorRatio! + opts.errorRatioDelta;
    const errorBaseline = edge.errorRatio!;
    transition(edge, 'error_spike', errorSpike, errorRatio, errorBaseline, `${edge.direction} error ratio with ${edge.peer} at ${(errorRatio * 100).toFixed(0)}%, baseline ${(errorBaseline * 100).toFixed(0)}%`);
  }

  function transition(edge: Edge, kind: AnomalyKind, now: boolean, observed: number, baseline: number, message: string): void {
    const was = edge.active.has(kind);
    if (now && !was) {
      edge.active.add(kind);
      opts.onAnomaly({ kind, peer: edge.peer, direction: edge.direction, observed, baseline, message });
    } else if (!now && was) {
      edge.active.delete(kind);
      opts.onClear({ kind, peer: edge.peer, direction: edge.direction });
    }
  }

  return detector;
}
