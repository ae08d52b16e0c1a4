import http from 'node:http';
import { join, resolve } from 'node:path';
import { formatHelp, parseFlags, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, readSettings, text, whole, type SettingsOf } from '../../command/settings.js';
import { sidecarConfig, startSidecar, type Sidecar } from '../../proxy/main.js';
import { createLogger } from '../../command/log.js';
import type { JournalRecord } from '../../ledger/record.js';
import { createCollector, type Collector } from '../collector/collector.js';
import { formatRecordLine } from '../cli/format-record.js';
import { startFrontend, startInventory, type DemoApp } from './demo-apps.js';
import { pricingClient, startPricing } from './demo-pricing.js';
import { followSse } from '../cli/tail.js';
import { formatStoreReport } from '../cli/verify.js';
import { verifyStoreDir } from '../collector/store/verify-store.js';
import { untilAborted, type CommandIO } from '../../command/io.js';
import { writeLocalMonitoring } from './local-prometheus.js';

const DEMO_SETTINGS = {
  dir: text({ name: 'dir', default: './.auditmesh/demo', help: "where the demo's journals, keys and collector store go", env: false }),
  rate: whole({ name: 'rate', default: 2, help: 'checkouts per second driven through the mesh', env: false }),
  durationS: whole({ name: 'duration', default: 0, help: 'stop after this many seconds (0: until Ctrl-C)', env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: one JSON record per line', env: false }),
};
const DEMO_FLAGS: readonly FlagSpec[] = flagsOf(DEMO_SETTINGS);

export const DEMO_HELP = formatHelp(
  'auditmesh demo [flags]',
  'A whole local mesh on embedded defaults: a collector and three services (frontend, inventory,\npricing), each behind its own sidecar shipping to the collector; a client drives checkouts, frontend\ncalls inventory over HTTP/1.1, inventory calls pricing over gRPC; every record is printed as the\ncollector verifies and stores it. On stop, the collector\'s store is verified and the result printed.',
  DEMO_FLAGS,
);

/** `auditmesh demo` (and `npm start`): runs until Ctrl-C or --duration, then stops cleanly. */
export async function demoMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(DEMO_HELP);
    return 0;
  }
  let values: SettingsOf<typeof DEMO_SETTINGS>;
  try {
    values = readSettings(DEMO_SETTINGS, parseFlags(DEMO_FLAGS, argv, io.env).values, io.env);
  } catch (err) {
    io.stderr.write(`auditmesh demo: ${(err as Error).message}\n`);
    return 2;
  }
  const dir = resolve(values.dir);
  const json = values.output === 'json';
  const log = createLogger('warn', (line) => io.stderr.write(line));
  const cleanups: Array<() => Promise<void>> = [];
  const sidecars: Sidecar[] = [];
  let collector: Collector | undefined;
  try {
    // Embedded and local: no token to hand out, so --insecure, on 127.0.0.1 only.
    collector = await createCollector({ grpcPort: 0, httpPort: 0, bind: '127.0.0.1', storeDir: join(dir, 'collector'), insecure: true }, log);
    const tail = followCollector(collector, io, json);
    cleanups.unshift(() => tail.stop());
    const collectorAddress = collector.grpcAddress;
    const sidecarFor = async (service: string, appPort: number, resolveTable = new Map()): Promise<Sidecar> => {
      const sidecar = await startSidecar(
        sidecarConfig({
          service,
          sidecarId: service,
          appPort,
          journalDir: join(dir, service, 'journal'),
          redactionKeyFile: join(dir, 'redaction.key'),
          keyFile: join(dir, service, 'sidecar.key'),
          resolve: resolveTable,
          collector: collectorAddress,
        }),
        log,
      );
      cleanups.unshift(() => sidecar.close());
      sidecars.push(sidecar);
      return sidecar;
    };
    const track = (app: DemoApp): DemoApp => (cleanups.unshift(() => app.close()), app);

    const pricingApp = track(await startPricing());
    const pricing = await sidecarFor('pricing', pricingApp.port);
    const quotes = pricingClient(() => inventory.ports.outbound);
    cleanups.unshift(async () => quotes.close());
    const inventoryApp = track(await startInventory((item, headers) => quotes.quote(item, headers)));
    const inventory = await sidecarFor('inventory', inventoryApp.port, new Map([['pricing:50051', { host: '127.0.0.1', port: pricing.ports.inbound! }]]));
    // The app is called only once its sidecar is up, so the closure reads a bound port.
    const frontendApp = track(await startFrontend(() => frontend.ports.outbound));
    const frontend = await sidecarFor('frontend', frontendApp.port, new Map([['inventory:80', { host: '127.0.0.1', port: inventory.ports.inbound! }]]));

    const prometheus = await writeDemoPrometheus(dir, collector, { frontend, inventory, pricing });
    if (!json) {
      io.stdout.write(
        `auditmesh demo: client → frontend (sidecar :${frontend.ports.inbound}) → inventory (sidecar :${inventory.ports.inbound}) → pricing, gRPC (sidecar :${pricing.ports.inbound})\n` +
          `  collector ${collector.grpcAddress} (gRPC), ${collector.httpUrl} (query, tail, metrics); store in ${join(dir, 'collector')}\n` +
          `  journals in ${dir}; metrics at http://127.0.0.1:${frontend.ports.admin}/metrics and http://127.0.0.1:${inventory.ports.admin}/metrics\n` +
          `  from another terminal: npx auditmesh tail --admin http://127.0.0.1:${inventory.ports.admin}, or curl '${collector.httpUrl}/v1/records?service=pricing'\n` +
          `  Prometheus, scraping this mesh as the Operator would with auditmesh's rules: prometheus --config.file=${prometheus} --storage.tsdb.path=${join(dir, 'prometheus', 'data')}\n` +
          `  Ctrl-C to stop.\n\n`,
      );
    }
    const stop = AbortSignal.any([io.signal, ...(values.durationS > 0 ? [AbortSignal.timeout(values.durationS * 1000)] : [])]);
    const driver = driveTraffic(frontend.ports.inbound!, values.rate, stop);
    await untilAborted(stop);
    await driver;
    // What the sidecars still hold goes to the collector before they stop, so its store is whole.
    await Promise.all(sidecars.map((s) => shipped(s, SHIP_DRAIN_MS)));
  } finally {
    for (const cleanup of cleanups) await cleanup();
    await collector?.close();
    if (!json) io.stdout.write(`\nauditmesh demo: stopped; journals kept in ${dir}\n`);
  }
  // The collector is closed: its store is verified offline, as `auditmesh verify STORE` does.
  const report = await verifyStoreDir(join(dir, 'collector'));
  // With -o json, stdout carries records only.
  (json ? io.stderr : io.stdout).write(formatStoreReport(report));
  return report.ok ? 0 : 1;
}

/** Scrape and rule evaluation interval of the demo's Prometheus configuration: a local mesh, seconds matter. */
const DEMO_PROMETHEUS_INTERVAL = '2s';

/** Writes DIR/prometheus/prometheus.yml (and its rules file) for this run's ports; returns its path. */
async function writeDemoPrometheus(dir: string, collector: Collector, sidecars: Record<string, Sidecar>): Promise<string> {
  const local = { sidecars: Object.entries(sidecars).map(([service, s]) => ({ service, namespace: 'demo', adminPort: s.ports.admin })), collectorHttpPort: Number(new URL(collector.httpUrl).port) };
  const { configFile } = await writeLocalMonitoring(join(dir, 'prometheus'), local, { scrapeInterval: DEMO_PROMETHEUS_INTERVAL, evaluationInterval: DEMO_PROMETHEUS_INTERVAL });
  return configFile;
}

/** On stop, how long the demo waits for the sidecars to ship what they hold. */
const SHIP_DRAIN_MS = 5_000;

/** Resolves once the collector acknowledged everything the sidecar's journal held on the call, or after `timeoutMs`. */
async function shipped(sidecar: Sidecar, timeoutMs: number): Promise<void> {
  const journal = sidecar.audit?.journal;
  if (journal === undefined) return;
  const target = journal.head.last_batch;
  const deadline = Date.now() + timeoutMs;
  while (journal.shippedBatch < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** Prints every record the collector stores, from its /v1/tail, as `auditmesh tail --collector` does. */
function followCollector(collector: Collector, io: CommandIO, json: boolean): { stop(): Promise<void> } {
  const controller = new AbortController();
  const following = followSse(new URL('/v1/tail', collector.httpUrl), { ...io, signal: controller.signal }, (data) => {
    const rec = JSON.parse(data) as JournalRecord;
    io.stdout.write((json ? JSON.stringify(rec) : formatRecordLine(rec)) + '\n');
  });
  return {
    async stop() {
      controller.abort();
      await following;
    },
  };
}

/** A client calling frontend's inbound sidecar at `rate` checkouts per second until stopped. */
async function driveTraffic(port: number, rate: number, signal: AbortSignal): Promise<void> {
  let n = 1;
  const intervalMs = 1000 / Math.max(1, rate);
  while (!signal.aborted) {
    const id = n++;
    const req = http.get({ host: '127.0.0.1', port, path: `/checkout/${id}`, headers: { authorization: 'Bearer demo-secret-token' } }, (res) => res.resume());
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
