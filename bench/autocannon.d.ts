// autocannon 8 ships no types and @types/autocannon is not a dependency: the part bench/ uses.
declare module 'autocannon' {
  export interface Options {
    url: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    /** Stop after this many responses instead of after `duration` (nothing left in flight). */
    amount?: number;
    method?: string;
    headers?: Record<string, string>;
    /** Milliseconds before a request counts as a timeout. */
    timeout?: number;
  }

  /** A latency (ms) or per-second sample histogram, with the percentiles autocannon adds. */
  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p90: number;
    p99: number;
    p99_9: number;
    sent?: number;
  }

  export interface Result {
    url: string;
    connections: number;
    pipelining: number;
    /** Seconds actually run. */
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    resets: number;
    latency: Histogram;
    requests: Histogram;
    throughput: Histogram;
  }

  export default function autocannon(options: Options): Promise<Result>;
}
