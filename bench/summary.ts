// From every round's measurements to one median and spread per path and per metric. Pure: the
// printed table, the chart and the JSON all read this.
import type { PathName } from './knobs.js';
import type { Measurement, RatePoint } from './measure.js';

/** Median and range over the rounds that measured something; null when none did. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export interface RateSummary {
  offeredPerS: number;
  /** Rounds where this rate was measured; the others skipped it (the path did not sustain it). */
  measured: number;
  skipped: string | null;
  completedPerS: Spread | null;
  p50Ms: Spread | null;
  p99Ms: Spread | null;
  p99_9Ms: Spread | null;
  /** This path's latency minus direct's at the same rate, paired round by round. */
  addedP50Ms: Spread | null;
  addedP99Ms: Spread | null;
  addedP99_9Ms: Spread | null;
  cpuUsPerReq: Spread | null;
  /** How late the load generator issued requests against its schedule (p99): above ~1 ms, the generator itself was short of CPU. */
  issueLagP99Ms: Spread | null;
  errors: number;
}

export interface PathSummary {
  path: PathName;
  rounds: number;
  failure: string | null;
  rps: Spread | null;
  /** Each round's req/s, in round order (a path that failed stops early): paired ratios read these. */
  rpsRounds: number[];
  p50Ms: Spread | null;
  p99Ms: Spread | null;
  errors: number;
  cpuUsPerReq: Spread | null;
  mainThreadCpuUsPerReq: Spread | null;
  /** KiB the server's JavaScript allocated per request, and its GC pause per request (µs): steady where CPU time is not. */
  allocKiBPerReq: Spread | null;
  gcPauseUsPerReq: Spread | null;
  peakRssMiB: Spread | null;
  /** The resident set at the end of the run: anonymous (heaps) and file-backed (code, mapped files). */
  rssAnonMiB: Spread | null;
  rssFileMiB: Spread | null;
  otherCpuPercent: Spread | null;
  /** Largest working set and anonymous memory of the server's cgroup during the throughput run (MiB). */
  workingSetMiB: Spread | null;
  anonMiB: Spread | null;
  rates: RateSummary[];
}

export type Outcome = { runs: Measurement[]; failure?: string };

/** Median (mean of the middle two for an even count) and range; nulls are left out. */
export function spread(values: readonly (number | null | undefined)[]): Spread | null {
  const xs = values.filter((v): v is number => v !== null && v !== undefined && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = Math.floor(xs.length / 2);
  const median = xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
  return { median, min: xs[0]!, max: xs[xs.length - 1]!, n: xs.length };
}

const MIB = 2 ** 20;

function pointAt(run: Measurement | undefined, offeredPerS: number): RatePoint | undefined {
  return run?.rates.find((p) => p.offeredPerS === offeredPerS);
}

function summarizeRate(runs: readonly Measurement[], directRuns: readonly Measurement[], offeredPerS: number): RateSummary {
  const points = runs.map((r) => pointAt(r, offeredPerS));
  const measured = points.filter((p) => p?.result !== undefined);
  const stat = (pick: (p: RatePoint) => number | null | undefined): Spread | null => spread(measured.map((p) => pick(p!)));
  // Round i of this path against round i of direct: both ran minutes apart at most, on the same machine state.
  const added = (pick: (r: NonNullable<RatePoint['result']>) => number): Spread | null =>
    spread(
      points.map((p, i) => {
        const d = pointAt(directRuns[i], offeredPerS);
        return p?.result === undefined || d?.result === undefined ? null : pick(p.result) - pick(d.result);
      }),
    );
  return {
    offeredPerS,
    measured: measured.length,
    skipped: points.find((p) => p?.skipped !== undefined)?.skipped ?? null,
    completedPerS: stat((p) => p.result?.completedPerS),
    p50Ms: stat((p) => p.result?.latencyMs.p50),
    p99Ms: stat((p) => p.result?.latencyMs.p99),
    p99_9Ms: stat((p) => p.result?.latencyMs.p99_9),
    addedP50Ms: added((r) => r.latencyMs.p50),
    addedP99Ms: added((r) => r.latencyMs.p99),
    addedP99_9Ms: added((r) => r.latencyMs.p99_9),
    cpuUsPerReq: stat((p) => p.serverCpuUsPerReq),
    issueLagP99Ms: stat((p) => p.result?.issueLagP99Ms),
    errors: measured.reduce((sum, p) => sum + p!.result!.errors + p!.result!.non2xx, 0),
  };
}

/**
 * a's req/s over b's, round by round (both measured in the same round, minutes apart at most),
 * and their median: on a machine whose speed drifts between minutes, the ratio of the two paths'
 * medians can pair a fast minute with a slow one. Null when no round measured both.
 */
export function pairedRatios(a: PathSummary | undefined, b: PathSummary | undefined): { rounds: number[]; median: number } | null {
  if (a === undefined || b === undefined) return null;
  const rounds: number[] = [];
  for (let i = 0; i < Math.min(a.rpsRounds.length, b.rpsRounds.length); i++) if (b.rpsRounds[i]! > 0) rounds.push(a.rpsRounds[i]! / b.rpsRounds[i]!);
  const s = spread(rounds);
  return s === null ? null : { rounds, median: s.median };
}

/** One summary per path, in the order measured; rates in the order of `rates`. */
export function summarize(outcomes: ReadonlyMap<PathName, Outcome>, rates: readonly number[]): PathSummary[] {
  const directRuns = outcomes.get('direct')?.runs ?? [];
  return [...outcomes].map(([path, { runs, failure }]) => ({
    path,
    rounds: runs.length,
    failure: failure ?? null,
    rps: spread(runs.map((r) => r.rps)),
    rpsRounds: runs.map((r) => r.rps),
    p50Ms: spread(runs.map((r) => r.latencyP50Ms)),
    p99Ms: spread(runs.map((r) => r.latencyP99Ms)),
    errors: runs.reduce((sum, r) => sum + r.errors + r.non2xx, 0),
    cpuUsPerReq: spread(runs.map((r) => r.serverCpuUsPerReq)),
    mainThreadCpuUsPerReq: spread(runs.map((r) => r.serverMainThreadCpuUsPerReq)),
    allocKiBPerReq: spread(runs.map((r) => (r.serverAllocBytesPerReq === null ? null : r.serverAllocBytesPerReq / 1024))),
    gcPauseUsPerReq: spread(runs.map((r) => r.serverGcPauseUsPerReq)),
    peakRssMiB: spread(runs.map((r) => (r.serverPeakRssBytes === null ? null : r.serverPeakRssBytes / MIB))),
    rssAnonMiB: spread(runs.map((r) => (r.serverRssParts === null ? null : r.serverRssParts.anon / MIB))),
    rssFileMiB: spread(runs.map((r) => (r.serverRssParts === null ? null : r.serverRssParts.file / MIB))),
    otherCpuPercent: spread(runs.map((r) => r.otherCpuPercent)),
    workingSetMiB: spread(runs.map((r) => (r.serverCgroup == null ? null : r.serverCgroup.workingSet / MIB))),
    anonMiB: spread(runs.map((r) => (r.serverCgroup == null ? null : r.serverCgroup.anon / MIB))),
    rates: rates.map((rate) => summarizeRate(runs, directRuns, rate)),
  }));
}
