// The printed report: the HTTP/1.1 table (ratios to direct and to nginx, latency at the headline
// rate), latency at every fixed rate, the targets, and the gRPC and journal sections.
import type { GrpcRow } from './grpc.js';
import type { JournalRow } from './journal.js';
import type { PathName } from './knobs.js';
import { type PathSummary, type RateSummary, type Spread, pairedRatios, spread } from './summary.js';
import { formatTable } from './table.js';

/**
 * The targets (issues 2, 9 and 28), on this 2-core machine. auditThroughputShare: against
 * sidecar-off; httpProxyShare: against bare http-proxy; strictShare: sidecar-strict against
 * sidecar-async; memory as Kubernetes counts it (the server's cgroup), the largest over the rounds.
 */
export const TARGETS = {
  auditThroughputShare: 0.9,
  httpProxyShare: 0.9,
  addedP99Ms: 1,
  addedP99_9Ms: 3,
  addedP99AtPerS: 2000,
  workingSetMiB: 64,
  anonMiB: 56,
  cpuUsPerReq: 80,
  strictShare: 0.7,
  grpcUnaryShare: 0.6,
  grpcBidiShare: 0.9,
} as const;
const AUDITED: readonly PathName[] = ['sidecar-async', 'sidecar-strict'];
/** Above this much CPU (% of one CPU) used by other processes during a run, its numbers are suspect. */
const BUSY_OTHER_CPU_PERCENT = 10;

const rounds = (ratios: readonly number[]): string => ratios.map((r) => r.toFixed(2)).join(' / ');
const fixed = (n: number | null | undefined, digits: number): string => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits));

/** "median (min..max)", or the median alone for one round. */
export function formatSpread(s: Spread | null, digits: number): string {
  if (s === null) return '-';
  return s.n === 1 || s.min === s.max ? fixed(s.median, digits) : `${fixed(s.median, digits)} (${fixed(s.min, digits)}..${fixed(s.max, digits)})`;
}

const ratio = (a: Spread | null | undefined, b: Spread | null | undefined): string =>
  a === null || a === undefined || b === null || b === undefined || b.median === 0 ? '-' : (a.median / b.median).toFixed(2);

/** The rate the main table and the targets quote: 2,000 req/s when measured, else the nearest below. */
export function headlineRate(rates: readonly number[]): number | null {
  const below = rates.filter((r) => r <= TARGETS.addedP99AtPerS);
  return below.length > 0 ? Math.max(...below) : (rates[0] ?? null);
}

const rateOf = (s: PathSummary | undefined, rate: number | null): RateSummary | undefined => s?.rates.find((r) => r.offeredPerS === rate);

function latencyCell(r: RateSummary | undefined): string {
  if (r === undefined) return '-';
  if (r.measured === 0) return 'not sustained';
  return `${fixed(r.p50Ms?.median, 2)} / ${fixed(r.p99Ms?.median, 2)} / ${fixed(r.p99_9Ms?.median, 2)}`;
}

export function renderHttpTable(summaries: readonly PathSummary[], rates: readonly number[]): string {
  const by = new Map(summaries.map((s) => [s.path, s]));
  const direct = by.get('direct')?.rps;
  const nginx = by.get('nginx')?.rps;
  const rate = headlineRate(rates);
  const header = ['path', 'req/s (min..max)', 'vs direct', 'vs nginx', 'p99 ms', 'errors', 'cpu µs/req', 'alloc KiB/req', 'GC µs/req', 'working set MiB (anon)', 'peak RSS MiB', `@${rate}/s p50 / p99 / p99.9 ms`, `@${rate}/s +p99 ms`, 'other cpu %'];
  const rows = summaries.map((s) => {
    if (s.rps === null) return [s.path, `failed: ${s.failure ?? 'no runs'}`, ...header.slice(2).map(() => '-')];
    const at = rateOf(s, rate);
    return [
      s.path,
      formatSpread(s.rps, 0),
      ratio(s.rps, direct),
      ratio(s.rps, nginx),
      formatSpread(s.p99Ms, 1),
      String(s.errors),
      formatSpread(s.cpuUsPerReq, 0),
      formatSpread(s.allocKiBPerReq, 1),
      formatSpread(s.gcPauseUsPerReq, 1),
      s.workingSetMiB === null ? '-' : `${fixed(s.workingSetMiB.max, 0)} (${fixed(s.anonMiB?.max, 0)})`,
      fixed(s.peakRssMiB?.max, 0),
      latencyCell(at),
      s.path === 'direct' ? '0' : formatSpread(at?.addedP99Ms ?? null, 2),
      fixed(s.otherCpuPercent?.max, 0),
    ];
  });
  return formatTable(header, rows);
}

export function renderRatesTable(summaries: readonly PathSummary[]): string {
  const header = ['path', 'offered/s', 'done/s', 'p50 ms', 'p99 ms', 'p99.9 ms', '+p50 ms', '+p99 ms', '+p99.9 ms', 'cpu µs/req', 'errors', 'load lag p99 ms'];
  const rows = summaries.flatMap((s) =>
    s.rates.map((r) =>
      r.measured === 0
        ? [s.path, String(r.offeredPerS), `not sustained: ${r.skipped ?? 'failed'}`, '', '', '', '', '', '', '', '', '']
        : [
            s.path,
            String(r.offeredPerS),
            formatSpread(r.completedPerS, 0),
            formatSpread(r.p50Ms, 2),
            formatSpread(r.p99Ms, 2),
            formatSpread(r.p99_9Ms, 2),
            formatSpread(r.addedP50Ms, 2),
            formatSpread(r.addedP99Ms, 2),
            formatSpread(r.addedP99_9Ms, 2),
            formatSpread(r.cpuUsPerReq, 0),
            String(r.errors),
            fixed(r.issueLagP99Ms?.max, 2),
          ],
    ),
  );
  return formatTable(header, rows);
}

/** One line per target and audited path: the number, the target, met or missed. */
export function targetLines(summaries: readonly PathSummary[], rates: readonly number[]): string[] {
  const by = new Map(summaries.map((s) => [s.path, s]));
  const off = by.get('sidecar-off');
  const lines: string[] = [];
  for (const path of AUDITED) {
    const s = by.get(path);
    if (s?.rps == null) continue;
    // A verdict from rounds where other work took the CPU says little either way: say so on the line.
    const busy = Math.max(s.otherCpuPercent?.max ?? 0, off?.otherCpuPercent?.max ?? 0, by.get('direct')?.otherCpuPercent?.max ?? 0);
    const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED') + (busy > BUSY_OTHER_CPU_PERCENT ? ` (machine busy: other work used up to ${busy.toFixed(0)}% CPU)` : '');
    // Auditing on against off is async's target; strict's is against async (below).
    if (off?.rps != null && path === 'sidecar-async') {
      const share = s.rps.median / off.rps.median;
      lines.push(`${path} vs sidecar-off: ${(share * 100).toFixed(1)}% of throughput (target >= ${TARGETS.auditThroughputShare * 100}%): ${verdict(share >= TARGETS.auditThroughputShare)}`);
    }
    const vsProxy = pairedRatios(s, by.get('http-proxy'));
    if (vsProxy !== null) {
      lines.push(`${path} vs bare http-proxy, round by round: ${rounds(vsProxy.rounds)}, median ${vsProxy.median.toFixed(2)}x (target >= ${TARGETS.httpProxyShare}x): ${verdict(vsProxy.median >= TARGETS.httpProxyShare)}`);
    }
    const at = rates.includes(TARGETS.addedP99AtPerS) ? rateOf(s, TARGETS.addedP99AtPerS) : undefined;
    if (at === undefined) lines.push(`${path} added p99 at ${TARGETS.addedP99AtPerS} req/s: not measured (RATES does not include it)`);
    else if (at.addedP99Ms === null) lines.push(`${path} added p99 at ${TARGETS.addedP99AtPerS} req/s: MISSED, not sustained (${at.skipped ?? 'no direct baseline'})`);
    else {
      lines.push(`${path} added p99 at ${TARGETS.addedP99AtPerS} req/s: ${at.addedP99Ms.median.toFixed(2)} ms over direct (target <= ${TARGETS.addedP99Ms} ms): ${verdict(at.addedP99Ms.median <= TARGETS.addedP99Ms)}`);
      if (at.addedP99_9Ms !== null) lines.push(`${path} added p99.9 at ${TARGETS.addedP99AtPerS} req/s: ${at.addedP99_9Ms.median.toFixed(2)} ms over direct (target <= ${TARGETS.addedP99_9Ms} ms): ${verdict(at.addedP99_9Ms.median <= TARGETS.addedP99_9Ms)}`);
    }
    lines.push(...memoryLines(path, s, verdict));
    if (path === 'sidecar-async' && s.cpuUsPerReq !== null) lines.push(`${path} CPU per request at full load: ${s.cpuUsPerReq.median.toFixed(0)} µs (target <= ${TARGETS.cpuUsPerReq} µs; nginx ${fixed(by.get('nginx')?.cpuUsPerReq?.median, 0)}): ${verdict(s.cpuUsPerReq.median <= TARGETS.cpuUsPerReq)}`);
  }
  const strict = pairedRatios(by.get('sidecar-strict'), by.get('sidecar-async'));
  if (strict !== null) lines.push(`sidecar-strict vs sidecar-async, round by round: ${rounds(strict.rounds)}, median ${strict.median.toFixed(2)}x (target >= ${TARGETS.strictShare}x): ${strict.median >= TARGETS.strictShare ? 'met' : 'MISSED'}`);
  // What request metrics and alerts cost: the same audited sidecar with them on and off (issue 6).
  const on = by.get('sidecar-async');
  const bare = by.get('sidecar-async-no-metrics');
  if (on?.rps != null && bare?.rps != null) {
    lines.push(`metrics and alerts on vs off (sidecar-async vs sidecar-async-no-metrics): ${((on.rps.median / bare.rps.median) * 100).toFixed(1)}% of throughput, CPU ${fixed(on.cpuUsPerReq?.median, 0)} vs ${fixed(bare.cpuUsPerReq?.median, 0)} µs/req`);
  }
  return lines;
}

/** Working set and anonymous memory in the server's cgroup against the targets; the largest over the rounds. */
function memoryLines(path: PathName, s: PathSummary, verdict: (ok: boolean) => string): string[] {
  if (s.workingSetMiB === null || s.anonMiB === null) return [`${path} working set under load: not measured (no memory cgroup; see CGROUP)`];
  return [
    `${path} working set under load: ${s.workingSetMiB.max.toFixed(1)} MiB (target <= ${TARGETS.workingSetMiB} MiB): ${verdict(s.workingSetMiB.max <= TARGETS.workingSetMiB)}`,
    `${path} anonymous memory under load: ${s.anonMiB.max.toFixed(1)} MiB (target <= ${TARGETS.anonMiB} MiB): ${verdict(s.anonMiB.max <= TARGETS.anonMiB)}`,
  ];
}

/** gRPC through the audited sidecar against direct: unary and bidirectional-stream throughput, medians over the rounds. */
export function grpcTargetLines(rounds: readonly (readonly GrpcRow[])[]): string[] {
  const median = (path: string, pick: (r: GrpcRow) => number): number | null => spread(rounds.flat().filter((r) => r.path === path).map(pick))?.median ?? null;
  const lines: string[] = [];
  for (const [what, pick, target] of [
    ['unary calls', (r: GrpcRow) => r.unaryPerSec, TARGETS.grpcUnaryShare],
    ['bidi stream messages', (r: GrpcRow) => r.bidiMsgsPerSec, TARGETS.grpcBidiShare],
  ] as const) {
    const direct = median('direct', pick);
    const audited = median('sidecar-async', pick);
    if (direct === null || audited === null || direct === 0) continue;
    const share = audited / direct;
    lines.push(`gRPC ${what} through sidecar-async vs direct: ${share.toFixed(2)}x (target >= ${target}x): ${share >= target ? 'met' : 'MISSED'}`);
  }
  return lines;
}

/** The closing note's ratios: the audited sidecar against direct, nginx and bare http-proxy. */
export function headlineLines(summaries: readonly PathSummary[], rates: readonly number[]): string[] {
  const by = new Map(summaries.map((s) => [s.path, s]));
  const s = by.get('sidecar-async');
  if (s?.rps == null) return ['headline: n/a (sidecar-async not measured)'];
  const vs = (p: PathName): string => {
    const paired = pairedRatios(s, by.get(p));
    return `${ratio(s.rps, by.get(p)?.rps)}x ${p}` + (paired === null || paired.rounds.length < 2 ? '' : ` (round by round ${rounds(paired.rounds)})`);
  };
  const rate = headlineRate(rates);
  const at = rateOf(s, rate);
  return [
    `sidecar-async throughput: ${vs('direct')}, ${vs('nginx')}, ${vs('http-proxy')}`,
    `sidecar-async at ${rate} req/s: ${at?.addedP99Ms == null ? 'not sustained' : `+${at.addedP99Ms.median.toFixed(2)} ms p99 over direct`}; ` +
      `CPU ${fixed(s.cpuUsPerReq?.median, 0)} µs/req at full load (nginx ${fixed(by.get('nginx')?.cpuUsPerReq?.median, 0)}, http-proxy ${fixed(by.get('http-proxy')?.cpuUsPerReq?.median, 0)}); ` +
        `working set ${fixed(s.workingSetMiB?.max, 0)} MiB (anon ${fixed(s.anonMiB?.max, 0)}; nginx ${fixed(by.get('nginx')?.workingSetMiB?.max, 0)}); peak RSS ${fixed(s.peakRssMiB?.max, 0)} MiB`,
  ];
}

/** gRPC over rounds: unary calls and a bidirectional stream, each path against direct. */
export function renderGrpcTable(rounds: readonly (readonly GrpcRow[])[]): string {
  const paths = [...new Set(rounds.flat().map((r) => r.path))];
  const stat = (path: string, pick: (r: GrpcRow) => number): Spread | null => spread(rounds.flat().filter((r) => r.path === path).map(pick));
  const header = ['path', 'unary/s (min..max)', 'vs direct', 'p50 ms', 'p99 ms', 'errors', 'bidi msg/s (min..max)', 'vs direct', 'cpu ms/call'];
  const rows = paths.map((p) => [
    p,
    formatSpread(stat(p, (r) => r.unaryPerSec), 0),
    ratio(stat(p, (r) => r.unaryPerSec), stat('direct', (r) => r.unaryPerSec)),
    formatSpread(stat(p, (r) => r.p50Ms), 2),
    formatSpread(stat(p, (r) => r.p99Ms), 2),
    String(rounds.flat().filter((r) => r.path === p).reduce((n, r) => n + r.errors, 0)),
    formatSpread(stat(p, (r) => r.bidiMsgsPerSec), 0),
    ratio(stat(p, (r) => r.bidiMsgsPerSec), stat('direct', (r) => r.bidiMsgsPerSec)),
    formatSpread(stat(p, (r) => r.cpuMsPerCall), 3),
  ]);
  return formatTable(header, rows);
}

/** The journal over rounds: records/s of each run against lmdb-js alone. */
export function renderJournalTable(rounds: readonly (readonly JournalRow[])[]): string {
  const runs = [...new Set(rounds.flat().map((r) => r.run))];
  const stat = (run: string, pick: (r: JournalRow) => number | undefined): Spread | null => spread(rounds.flat().filter((r) => r.run === run).map(pick));
  const baseline = runs[0];
  const header = ['run', 'records/s (min..max)', 'vs baseline', 'main µs/record', 'latency p99 ms', 'latency of'];
  const rows = runs.map((run) => [
    run,
    formatSpread(stat(run, (r) => r.recordsPerS), 0),
    baseline === undefined ? '-' : ratio(stat(run, (r) => r.recordsPerS), stat(baseline, (r) => r.recordsPerS)),
    formatSpread(stat(run, (r) => (r.elu * 1e6) / r.recordsPerS), 1),
    formatSpread(stat(run, (r) => r.lag?.p99), 1),
    rounds.flat().find((r) => r.run === run)?.lag?.label ?? '-',
  ]);
  return formatTable(header, rows);
}
