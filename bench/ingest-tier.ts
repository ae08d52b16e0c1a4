// The collector tier's part of bench/ingest.ts: the same streams into 1 or 2 replicas on a NATS
// JetStream cluster (nats-server, started here on loopback), each round a fresh cluster.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';
import { cpuTimeMs, minorFaults } from './proc-stats.js';

const SERVE_SCRIPT = fileURLToPath(new URL('./ingest-serve.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface TierRound {
  replicas: number;
  natsNodes: number;
  seconds: number;
  /** CPU of every replica process (all threads) from the first record sent until indexing went idle, ms. */
  replicaCpuMs: number;
  natsCpuMs: number;
  /** Minor page faults of every replica process over the same span (about 15 µs each on this VM: README, "Fresh memory"). */
  replicaFaults: number;
  /** Wall time inside the replicas: publish until JetStream acked, compare-and-set, local index writes. */
  publishMs: number;
  casMs: number;
  indexMs: number;
}

interface Replica {
  pid: number;
  address: string;
  stop(): Promise<{ publishMs: number; casMs: number; indexMs: number } | null>;
}

async function startReplica(storeDir: string, urls: string): Promise<Replica> {
  // As the embedded collector (collector-process.ts): PROFILE=1 writes a CPU profile of each replica, COLLECTOR_NODE_FLAGS applies too.
  const flags = process.env.PROFILE === '1' ? ['--cpu-prof', '--cpu-prof-dir=bench/results/profiles'] : [];
  if (process.env.COLLECTOR_NODE_FLAGS) flags.push(...process.env.COLLECTOR_NODE_FLAGS.split(' '));
  const child = spawn(process.execPath, ['--import=tsx', ...flags, SERVE_SCRIPT, storeDir, urls], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done === true) throw new Error('a replica exited before listening');
  const { grpc } = JSON.parse(first.value as string) as { grpc: number };
  return {
    pid: child.pid!,
    address: `127.0.0.1:${grpc}`,
    async stop() {
      child.kill('SIGTERM');
      for (let next = await lines.next(); next.done !== true; next = await lines.next()) {
        const m = JSON.parse(next.value as string) as { times?: { publishMs: number; casMs: number; indexMs: number } | null };
        if (m.times !== undefined) return m.times;
      }
      return null;
    },
  };
}

/** Until the processes' CPU stays under 5% of a core for a second: the shard owners indexed what was published. */
async function untilIdle(pids: number[]): Promise<void> {
  const total = (): number => pids.reduce((a, pid) => a + (cpuTimeMs(pid) ?? 0), 0);
  for (let before = total(), rounds = 0; rounds < 120; rounds++) {
    await sleep(1_000);
    const now = total();
    if (now - before < 50 * pids.length) return;
    before = now;
  }
}

/** Ships every stream (stream s to replica s mod N, as a Service spreads connections) and measures. */
export async function tierRound<S>(dir: string, replicas: number, natsNodes: number, streams: readonly S[], send: (address: string, stream: S) => () => Promise<void>): Promise<TierRound> {
  const cleanups: Array<() => unknown> = [];
  const t = { teardown: (fn: () => unknown) => void cleanups.push(fn) } as unknown as ExecutionContext;
  try {
    const nats = await startNatsCluster(t, natsNodes);
    const natsPids = nats.nodes.map((n) => n.child!.pid!);
    const started: Replica[] = [];
    for (let r = 0; r < replicas; r++) started.push(await startReplica(`${dir}/replica-${r}`, nats.urls));
    // The shards spread over the replicas before the clock starts.
    await sleep(replicas > 1 ? 6_000 : 1_000);
    const senders = streams.map((s, i) => send(started[i % replicas].address, s));
    const pids = started.map((r) => r.pid);
    const cpu = (): number => pids.reduce((a, pid) => a + (cpuTimeMs(pid) ?? 0), 0);
    const natsCpu = (): number => natsPids.reduce((a, pid) => a + (cpuTimeMs(pid) ?? 0), 0);
    const faults = (): number => pids.reduce((a, pid) => a + (minorFaults(pid) ?? 0), 0);
    const [cpu0, nats0, faults0] = [cpu(), natsCpu(), faults()];
    const t0 = performance.now();
    await Promise.all(senders.map((s) => s()));
    const seconds = (performance.now() - t0) / 1000;
    await untilIdle(pids);
    const [cpu1, nats1, faults1] = [cpu(), natsCpu(), faults()];
    const times = await Promise.all(started.map((r) => r.stop()));
    const sum = (k: 'publishMs' | 'casMs' | 'indexMs'): number => times.reduce((a, x) => a + (x?.[k] ?? 0), 0);
    return { replicas, natsNodes, seconds, replicaCpuMs: cpu1 - cpu0, natsCpuMs: nats1 - nats0, replicaFaults: faults1 - faults0, publishMs: sum('publishMs'), casMs: sum('casMs'), indexMs: sum('indexMs') };
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}
