/** The paths one run can measure, in the order they run and print. */
export const PATH_NAMES = ['direct', 'http-proxy', 'undici', 'sidecar-off', 'sidecar-async', 'sidecar-async-no-metrics', 'sidecar-strict'] as const;
export type PathName = (typeof PATH_NAMES)[number];

/** Everything a run can be told from the environment. */
export interface Knobs {
  durationS: number;
  warmupS: number;
  connections: number;
  pipelining: number;
  repeat: number;
  /** Before each path, wait up to this long for other work on the machine to stop (0: don't). */
  quietWaitS: number;
  paths: PathName[];
  /** Pin autocannon and the servers to separate CPUs with taskset. */
  pin: boolean;
  /** Start servers with --cpu-prof, profiles into bench/results/profiles/. */
  profile: boolean;
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

function flag(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new Error(`${name}: expected 1 or 0, got ${JSON.stringify(raw)}`);
}

function pathList(env: Env): PathName[] {
  const raw = env.PATHS;
  if (raw === undefined || raw.trim() === '') return [...PATH_NAMES];
  const wanted = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
  for (const p of wanted) {
    if (!(PATH_NAMES as readonly string[]).includes(p)) throw new Error(`PATHS: unknown path ${JSON.stringify(p)} (known: ${PATH_NAMES.join(',')})`);
  }
  return PATH_NAMES.filter((p) => wanted.includes(p));
}

/** DURATION, WARMUP, CONNECTIONS, PIPELINING, REPEAT, QUIET_WAIT, PATHS, PIN, PROFILE; throws naming the variable. */
export function readKnobs(env: Env): Knobs {
  return {
    durationS: positiveInt(env, 'DURATION', 10),
    warmupS: positiveInt(env, 'WARMUP', 2),
    connections: positiveInt(env, 'CONNECTIONS', 50),
    pipelining: positiveInt(env, 'PIPELINING', 1),
    repeat: positiveInt(env, 'REPEAT', 1),
    quietWaitS: integer(env, 'QUIET_WAIT', 60, 0),
    paths: pathList(env),
    pin: flag(env, 'PIN', true),
    profile: flag(env, 'PROFILE', false),
  };
}
