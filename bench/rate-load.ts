// Open-loop load at a fixed request rate, for latency against offered load. autocannon's own
// rate limit (overallRate/connectionRate) sends each connection's quota for a second in one burst
// when the second starts, and its latency histogram keeps whole milliseconds (fractions are
// truncated), so sub-millisecond latencies all read 0 or 1: neither fits a proxy's added latency.
// Here, requests are issued on a fixed schedule (i / rate), whatever the responses are doing,
// and latencies go into an HdrHistogram in microseconds.
import hdr from 'hdr-histogram-js';
import { Pool } from 'undici';

export interface RateOptions {
  url: string;
  method: string;
  headers: Record<string, string>;
  ratePerS: number;
  durationS: number;
  /** At most this many connections: a request issued while all are busy queues in the client. */
  connections: number;
  timeoutMs: number;
}

/** Latency percentiles in ms. */
export interface LatencyMs {
  p50: number;
  p90: number;
  p99: number;
  p99_9: number;
  max: number;
  mean: number;
}

export interface RateResult {
  offeredPerS: number;
  /** Responses per second, over the schedule or until the last late response: below offeredPerS, the path fell behind. */
  completedPerS: number;
  sent: number;
  completed: number;
  errors: number;
  non2xx: number;
  /** From handing the request to the client to the response's last byte (client queueing included). */
  latencyMs: LatencyMs;
  /** How late the generator issued requests against the schedule: its own timer jitter, p99, ms. */
  issueLagP99Ms: number;
}

const US_PER_MS = 1000;
// Schedule ticks never wait less than this: setTimeout rounds shorter waits up to 1 ms anyway.
const MIN_TICK_MS = 1;

function histogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120 * 1e6, numberOfSignificantValueDigits: 3 });
}

function percentilesMs(h: hdr.Histogram): LatencyMs {
  const at = (p: number): number => h.getValueAtPercentile(p) / US_PER_MS;
  return { p50: at(50), p90: at(90), p99: at(99), p99_9: at(99.9), max: h.maxValue / US_PER_MS, mean: h.mean / US_PER_MS };
}

/** Runs one fixed-rate measurement and resolves once every issued request has settled. */
export async function runAtRate(options: RateOptions): Promise<RateResult> {
  const url = new URL(options.url);
  const path = url.pathname + url.search;
  const pool = new Pool(url.origin, { connections: options.connections, headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs });
  const latencies = histogram();
  const issueLag = histogram();
  const total = Math.max(1, Math.round(options.ratePerS * options.durationS));
  const intervalMs = 1000 / options.ratePerS;
  let completed = 0;
  let lastDoneAt = 0;
  let errors = 0;
  let non2xx = 0;
  const inFlight = new Set<Promise<void>>();

  const issue = (intendedAt: number): void => {
    const issuedAt = performance.now();
    issueLag.recordValue(Math.max(0, Math.round((issuedAt - intendedAt) * US_PER_MS)));
    const settled = pool
      .request({ path, method: options.method as 'GET', headers: options.headers })
      .then(async ({ statusCode, body }) => {
        await body.dump();
        latencies.recordValue(Math.max(1, Math.round((performance.now() - issuedAt) * US_PER_MS)));
        completed++;
        lastDoneAt = performance.now();
        if (statusCode < 200 || statusCode > 299) non2xx++;
      })
      .catch(() => {
        errors++;
      })
      .finally(() => inFlight.delete(settled));
    inFlight.add(settled);
  };

  const startedAt = performance.now();
  let issued = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      // Everything due by now goes out in this turn: a late timer never lowers the offered rate.
      const due = Math.min(total, Math.floor((performance.now() - startedAt) / intervalMs) + 1);
      while (issued < due) issue(startedAt + issued++ * intervalMs);
      if (issued >= total) return resolve();
      setTimeout(tick, Math.max(MIN_TICK_MS, startedAt + issued * intervalMs - performance.now()));
    };
    tick();
  });
  await Promise.all(inFlight);
  // Over the schedule, or until the last response when the path fell behind and finished late.
  const elapsedS = Math.max(total * intervalMs, lastDoneAt - startedAt) / 1000;
  await pool.close();
  return {
    offeredPerS: options.ratePerS,
    completedPerS: completed / elapsedS,
    sent: issued,
    completed,
    errors,
    non2xx,
    latencyMs: percentilesMs(latencies),
    issueLagP99Ms: issueLag.getValueAtPercentile(99) / US_PER_MS,
  };
}
