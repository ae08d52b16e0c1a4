// Entry: `npm run bench` (node --import=tsx bench/run.ts). The benchmark report: HTTP/1.1 through
// every path (direct, nginx, http-proxy, undici, the sidecar off/async/strict) at full load and at
// fixed rates, then gRPC, the journal and the collector's ingest; every number measured in this
// run on this machine. Prints one report, and writes it with the raw results (JSON) and the
// latency chart (SVG) to bench/results/.
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LoadChild, type Pinning, choosePinning, startLoadChild } from './children.js';
import { compileServers } from './compiled.js';
import { type Knobs, type PathName, readKnobs } from './knobs.js';
import { renderLatencyChart } from './latency-chart.js';
import { REQUEST, measurePath } from './measure.js';
import { type NginxFound, findNginx } from './nginx.js';
import { waitForQuiet } from './quiet.js';
import { grpcTargetLines, headlineLines, headlineRate, renderGrpcTable, renderHttpTable, renderJournalTable, renderRatesTable, targetLines } from './report-table.js';
import { type ScriptRun, runGrpcSection, runIngestSection, runJournalSection, runPairedSection } from './sections.js';
import { type Outcome, type PathSummary, summarize } from './summary.js';

const DEFAULT_RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
// A 1-minute load average above this on an idle machine means other work is competing.
const BUSY_LOAD_AVERAGE = 1;

async function quietly(knobs: Knobs): Promise<void> {
  if (knobs.quietWaitS === 0) return;
  const { quiet, busyPercent } = await waitForQuiet(knobs.quietWaitS * 1000);
  if (!quiet) process.stderr.write(` (machine still ${busyPercent?.toFixed(0)}% busy after ${knobs.quietWaitS}s, going ahead)`);
}

async function measureHttp(knobs: Knobs, pinning: Pinning, loader: LoadChild, nodeFlags: string[], nginxBinary: string | null, paths: readonly PathName[]): Promise<Map<PathName, Outcome>> {
  const outcomes = new Map<PathName, Outcome>(paths.map((p) => [p, { runs: [] }]));
  // Rounds interleave the paths, so slow drift on the machine spreads over all of them.
  for (let round = 1; round <= knobs.repeat; round++) {
    for (const path of paths) {
      const outcome = outcomes.get(path)!;
      if (outcome.failure !== undefined) continue;
      process.stderr.write(`[http ${round}/${knobs.repeat}] ${path} ...`);
      try {
        await quietly(knobs);
        const m = await measurePath(path, loader, knobs, pinning, nodeFlags, nginxBinary);
        outcome.runs.push(m);
        const rates = m.rates.map((r) => (r.result === undefined ? `${r.offeredPerS}/s skipped` : `${r.offeredPerS}/s p99 ${r.result.latencyMs.p99.toFixed(2)} ms`));
        process.stderr.write(` ${m.rps.toFixed(0)} req/s; ${rates.join(', ')}\n`);
      } catch (err) {
        outcome.failure = `round ${round}: ${(err as Error).message}`;
        process.stderr.write(` failed: ${outcome.failure}\n`);
      }
    }
  }
  return outcomes;
}

/** The paired section, once. */
async function pairedOnce(knobs: Knobs): Promise<{ stdout: string; failure: string | null }> {
  process.stderr.write(`[paired] ${knobs.pairs} pairs ...\n`);
  await quietly(knobs);
  const run = await runPairedSection(knobs);
  return { stdout: run.stdout, failure: run.ok ? null : run.error };
}

/** A section benchmark once per round; the rounds that worked, and the first failure. */
async function sectionRounds<T>(name: string, knobs: Knobs, run: () => Promise<ScriptRun<T>> | null): Promise<{ rounds: T[]; stdout: string[]; failure: string | null } | null> {
  const rounds: T[] = [];
  const stdout: string[] = [];
  for (let round = 1; round <= knobs.repeat; round++) {
    process.stderr.write(`[${name} ${round}/${knobs.repeat}] ...`);
    await quietly(knobs);
    const started = run();
    if (started === null) {
      process.stderr.write(' not available\n');
      return null;
    }
    const result = await started;
    stdout.push(result.stdout);
    if (!result.ok) {
      process.stderr.write(` failed: ${result.error}\n`);
      return { rounds, stdout, failure: result.error };
    }
    rounds.push(result.data);
    process.stderr.write(' done\n');
  }
  return { rounds, stdout, failure: null };
}

/** p50 and p99 against offered load, one line per path, medians over the rounds. */
function chart(summaries: readonly PathSummary[], caption: string): string {
  const panel = (title: string, pick: 'p50Ms' | 'p99Ms') => ({
    title,
    series: summaries.map((s) => ({
      name: s.path,
      points: s.rates.flatMap((r) => (r[pick] === null ? [] : [{ x: r.offeredPerS, y: Number(r[pick].median.toFixed(3)) }])),
    })),
  });
  return renderLatencyChart([panel('p50 latency', 'p50Ms'), panel('p99 latency', 'p99Ms')], caption);
}

function machineInfo() {
  return { nproc: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version, kernel: `${os.type()} ${os.release()}` };
}

async function main(): Promise<void> {
  const knobs = readKnobs(process.env);
  const resultsDir = knobs.resultsDir ?? DEFAULT_RESULTS_DIR;
  const pinning = choosePinning(knobs.pin);
  const nodeFlags = knobs.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(resultsDir, 'profiles')}`] : [];
  const machine = machineInfo();
  const started = new Date();
  const loadAverageAtStart = os.loadavg();
  const out: string[] = [];
  const say = (line = ''): void => {
    out.push(line);
    console.log(line);
  };

  say(`auditmesh benchmark report, ${started.toISOString()}${knobs.quick ? ' (QUICK: a smoke run, not numbers to quote)' : ''}`);
  say(`${machine.nproc} CPUs (${machine.cpu}), node ${machine.node}, ${machine.kernel}; ${pinning.note}; load average ${loadAverageAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  if (loadAverageAtStart[0]! > BUSY_LOAD_AVERAGE) say(`warning: load average above ${BUSY_LOAD_AVERAGE} at start: other work is running; see the "other cpu %" column`);

  let nginx: NginxFound | null = null;
  let paths = knobs.sections.includes('http') ? knobs.paths : [];
  if (paths.includes('nginx')) {
    nginx = findNginx(knobs.nginxInstall);
    if (nginx.ok) say(`nginx: ${nginx.binary} (${nginx.version})${nginx.installed ? ', installed for this run' : ''}`);
    else {
      say(`nginx skipped: ${nginx.reason}`);
      paths = paths.filter((p) => p !== 'nginx');
    }
  }
  say(
    `DURATION=${knobs.durationS}s WARMUP=${knobs.warmupS}s CONNECTIONS=${knobs.connections} PIPELINING=${knobs.pipelining} REPEAT=${knobs.repeat} ` +
      `RATES=${knobs.rates.join(',')} RATE_DURATION=${knobs.rateDurationS}s SUSTAIN_FRACTION=${knobs.sustainFraction} QUIET_WAIT=${knobs.quietWaitS}s; ` +
      `${REQUEST.method} ${REQUEST.path}, ${Object.keys(REQUEST.headers).join(' + ')} headers`,
  );

  if (paths.length > 0 || knobs.sections.includes('grpc')) {
    if (knobs.serversFrom === 'build') {
      process.stderr.write('compiling the servers (tsc -p tsconfig.bench.json) ...');
      compileServers();
      process.stderr.write(' done\n');
    }
    say(`servers run from ${knobs.serversFrom === 'build' ? 'compiled JS in bench/results/build (as deployed)' : 'TypeScript source through tsx'}`);
  }

  const loader = startLoadChild(pinning.load);
  let outcomes: Map<PathName, Outcome>;
  try {
    outcomes = await measureHttp(knobs, pinning, loader, nodeFlags, nginx?.ok ? nginx.binary : null, paths);
  } finally {
    await loader.close();
  }
  // Once, not per round: its pairs are its rounds.
  const paired = knobs.sections.includes('paired') ? await pairedOnce(knobs) : null;
  const grpc = knobs.sections.includes('grpc') ? await sectionRounds('grpc', knobs, () => runGrpcSection(knobs)) : null;
  const journal = knobs.sections.includes('journal') ? await sectionRounds('journal', knobs, () => runJournalSection(knobs)) : null;
  const ingest = knobs.sections.includes('ingest') ? await sectionRounds('ingest', knobs, () => runIngestSection(knobs)) : null;

  const summaries = summarize(outcomes, knobs.rates);
  const rounds = knobs.repeat === 1 ? 'one round' : `median (min..max) of ${knobs.repeat} rounds`;
  if (summaries.length > 0) {
    say(`\nHTTP/1.1, ${rounds}; req/s and p99 at full load (${knobs.connections} connections); latency at ${headlineRate(knobs.rates)} req/s offered; +p99: over direct in the same round\n`);
    say(renderHttpTable(summaries, knobs.rates));
    say(`\nLatency at fixed offered rates (open loop, ${knobs.rateDurationS}s each; skipped above ${knobs.sustainFraction * 100}% of the path's throughput in that round)\n`);
    say(renderRatesTable(summaries));
    say();
    for (const line of [...targetLines(summaries, knobs.rates), ...headlineLines(summaries, knobs.rates)]) say(line);
    for (const s of summaries) if (s.failure !== null) say(`${s.path} failed: ${s.failure}`);
  }
  if (paired !== null) {
    say(`\nPaired throughput (bench/paired.ts, as printed): ${knobs.pairs} pairs of ${knobs.sliceS} s slices, alternating: the target against bare http-proxy is judged on these pairs, not on the HTTP table's sequential rounds, which drift with the machine.\n`);
    for (const line of paired.stdout.split('\n')) if (line.trim() !== '') say(line.trimEnd());
    if (paired.failure !== null) say(`paired failed: ${paired.failure}`);
  }
  if (grpc !== null) {
    say(`\ngRPC, ${rounds}: ${knobs.grpcDurationS}s of unary calls, then a bidirectional stream of ${knobs.grpcStreamMessages} messages\n`);
    say(grpc.rounds.length > 0 ? renderGrpcTable(grpc.rounds.map((r) => r.rows)) : 'no rounds');
    if (grpc.rounds.length > 0) say('\n' + grpcTargetLines(grpc.rounds.map((r) => r.rows)).join('\n'));
    if (grpc.failure !== null) say(`gRPC failed: ${grpc.failure}`);
  }
  if (journal !== null) {
    say(`\nJournal (records through the whole audit pipeline), ${rounds}, ${knobs.journalDurationS}s per run\n`);
    say(journal.rounds.length > 0 ? renderJournalTable(journal.rounds.map((r) => r.rows)) : 'no rounds');
    if (journal.failure !== null) say(`journal failed: ${journal.failure}`);
  }
  if (knobs.sections.includes('ingest')) {
    // bench/ingest.ts belongs to the collector; its own output is quoted as it printed it.
    if (ingest === null) say('\nCollector ingest: not measured (bench/ingest.ts is not in this tree yet)');
    else {
      say(`\nCollector ingest (bench/ingest.ts, as printed), ${rounds}:\n`);
      for (const text of ingest.stdout) say(text.trimEnd());
      if (ingest.failure !== null) say(`ingest failed: ${ingest.failure}`);
    }
  }

  await mkdir(resultsDir, { recursive: true });
  const stamp = started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const base = join(resultsDir, `report-${stamp}`);
  const caption = `auditmesh, ${started.toISOString().slice(0, 16)}Z, ${machine.nproc} x ${machine.cpu}, node ${machine.node}, ${rounds}`;
  const checks = [...targetLines(summaries, knobs.rates), ...(grpc === null ? [] : grpcTargetLines(grpc.rounds.map((r) => r.rows)))];
  const raw = {
    date: started.toISOString(),
    machine,
    loadAverage: { start: loadAverageAtStart, end: os.loadavg() },
    knobs,
    pinning,
    nginx,
    request: REQUEST,
    http: { summaries, paths: Object.fromEntries(outcomes) },
    paired,
    grpc,
    journal,
    ingest,
    checks,
  };
  await writeFile(`${base}.json`, JSON.stringify(raw, null, 2) + '\n');
  await writeFile(`${base}.svg`, chart(summaries, caption));
  say(`\nload average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  say(`raw results: ${base}.json\nlatency chart: ${base}.svg\nthis report: ${base}.txt`);
  await writeFile(`${base}.txt`, out.join('\n') + '\n');
  const failed = summaries.some((s) => s.failure !== null) || [paired, grpc, journal, ingest].some((s) => s !== null && s.failure !== null);
  if (failed) process.exitCode = 1;
}

await main();
