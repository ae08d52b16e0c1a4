import type { ServersFrom } from './compiled.js';

/** The paths one run can measure, in the order they run and print. */
export const PATH_NAMES = ['direct', 'nginx', 'http-proxy', 'undici', 'sidecar-off', 'sidecar-async', 'sidecar-async-no-metrics', 'sidecar-strict'] as const;
export type PathName = (typeof PATH_NAMES)[number];

/** The parts of the report besides HTTP/1.1; each can be left out with SECTIONS. */
export const SECTION_NAMES = ['http', 'paired', 'grpc', 'journal', 'ingest'] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

/** Everything a run can be told from the environment. */
export interface Knobs {
  /** QUICK=1: a short smoke run (about a second per measurement, one round), for the test and for trying changes. */
  quick: boolean;
  durationS: number;
  warmupS: number;
  connections: number;
  pipelining: number;
  repeat: number;
  /** Fixed request rates (req/s) measured for latency, each only where the path sustains it. */
  rates: number[];
  rateDurationS: number;
  /** At most this many connections the fixed-rate client opens. */
  rateConnections: number;
  /** A rate is measured only up to this fraction of the path's maximum throughput in the same round. */
  sustainFraction: number;
  /** Before each path, wait up to this long for other work on the machine to stop (0: don't). */
  quietWaitS: number;
  paths: PathName[];
  sections: SectionName[];
  /** Pin the load generator and the servers to separate CPUs with taskset. */
  pin: boolean;
  /** Start each server in its own memory cgroup and read its working set as Kubernetes does (root or a delegated cgroup). */
  cgroup: boolean;
  /** Start servers with --cpu-prof, profiles into bench/results/profiles/. */
  profile: boolean;
  /** Run the servers from compiled JS (default, as deployed) or from the TypeScript source through tsx. */
  serversFrom: ServersFrom;
  /** Install nginx from Debian packages when it is missing (root and apt-get only). */
  nginxInstall: boolean;
  /** Paired section (bench/paired.ts): pairs of alternating slices, and each slice's length in seconds. */
  pairs: number;
  sliceS: number;
  /** gRPC section: seconds of unary calls per path, and messages in the bidirectional stream. */
  grpcDurationS: number;
  grpcStreamMessages: number;
  /** Journal section: seconds per run, and the offered rate of its paced run (records/s). */
  journalDurationS: number;
  journalRate: number;
  /** Ingest section: records per sidecar stream (bench/ingest.ts runs 4 streams). */
  ingestRecords: number;
  /** Where the JSON, the chart and the printed report go; default bench/results/. */
  resultsDir: string | null;
}

type Env = Readonly<Record<string, string | undefined>>;

function integer(env: Env, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name}: expected an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return value;
}

const positiveInt = (env: Env, name: string, fallback: number): number => integer(env, name, fallback, 1);

function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!(value > 0 && value <= 1)) throw new Error(`${name}: expected a number in (0, 1], got ${JSON.stringify(raw)}`);
  return value;
}

function flag(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new Error(`${name}: expected 1 or 0, got ${JSON.stringify(raw)}`);
}

function nameList<T extends string>(env: Env, name: string, known: readonly T[]): T[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return [...known];
  const wanted = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
  for (const p of wanted) {
    if (!(known as readonly string[]).includes(p)) throw new Error(`${name}: unknown ${JSON.stringify(p)} (known: ${known.join(',')})`);
  }
  return known.filter((p) => wanted.includes(p));
}

function rateList(env: Env, fallback: number[]): number[] {
  const raw = env.RATES;
  if (raw === undefined || raw.trim() === '') return fallback;
  const rates = raw.split(',').map((r) => Number(r.trim()));
  if (rates.some((r) => !Number.isInteger(r) || r < 1)) throw new Error(`RATES: expected a comma list of positive integers, got ${JSON.stringify(raw)}`);
  return [...new Set(rates)].sort((a, b) => a - b);
}

function serversFrom(env: Env): ServersFrom {
  const raw = env.SERVERS_FROM;
  if (raw === undefined || raw === '') return 'build';
  if (raw === 'build' || raw === 'source') return raw;
  throw new Error(`SERVERS_FROM: expected build or source, got ${JSON.stringify(raw)}`);
}

/** Every knob, named in README.md; QUICK changes the defaults, and a knob set explicitly wins over it. Throws naming the variable. */
export function readKnobs(env: Env): Knobs {
  const quick = flag(env, 'QUICK', false);
  return {
    quick,
    durationS: positiveInt(env, 'DURATION', quick ? 1 : 5),
    warmupS: positiveInt(env, 'WARMUP', quick ? 1 : 2),
    connections: positiveInt(env, 'CONNECTIONS', 50),
    pipelining: positiveInt(env, 'PIPELINING', 1),
    repeat: positiveInt(env, 'REPEAT', quick ? 1 : 3),
    rates: rateList(env, quick ? [500, 2000] : [500, 1000, 2000, 5000]),
    rateDurationS: positiveInt(env, 'RATE_DURATION', quick ? 1 : 5),
    rateConnections: positiveInt(env, 'RATE_CONNECTIONS', 50),
    sustainFraction: fraction(env, 'SUSTAIN_FRACTION', 0.9),
    quietWaitS: integer(env, 'QUIET_WAIT', quick ? 0 : 60, 0),
    paths: nameList(env, 'PATHS', PATH_NAMES),
    sections: nameList(env, 'SECTIONS', SECTION_NAMES),
    pin: flag(env, 'PIN', true),
    cgroup: flag(env, 'CGROUP', true),
    profile: flag(env, 'PROFILE', false),
    serversFrom: serversFrom(env),
    nginxInstall: flag(env, 'NGINX_INSTALL', true),
    pairs: positiveInt(env, 'PAIRS', quick ? 1 : 15),
    sliceS: positiveInt(env, 'SLICE', quick ? 1 : 2),
    grpcDurationS: positiveInt(env, 'GRPC_DURATION', quick ? 1 : 4),
    grpcStreamMessages: positiveInt(env, 'STREAM_MESSAGES', quick ? 2_000 : 30_000),
    journalDurationS: positiveInt(env, 'JOURNAL_DURATION', quick ? 1 : 4),
    journalRate: positiveInt(env, 'JOURNAL_RATE', 50_000),
    // As bench:ingest runs it: shorter runs measured half the rate (start-up and the first LMDB pages weigh more).
    ingestRecords: positiveInt(env, 'INGEST_RECORDS', quick ? 2_000 : 100_000),
    resultsDir: env.RESULTS_DIR === undefined || env.RESULTS_DIR === '' ? null : env.RESULTS_DIR,
  };
}
