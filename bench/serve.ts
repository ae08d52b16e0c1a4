// Child entry: `node --import=tsx bench/serve.ts <kind> [upstreamPort]`. Starts one server on
// 127.0.0.1 port 0, prints {"port":N} on stdout, and stops cleanly on SIGTERM (a clean exit is
// also what lets --cpu-prof write its profile).
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUpstream } from './upstream.js';
import { createHttpProxyBaseline, createUndiciBaseline } from './forwarders.js';
import { SERVER_KINDS, type ServerKind } from './server-kind.js';


interface Served {
  port: number;
  close(): Promise<void>;
}

function listen(server: http.Server): Promise<Served> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      const close = (): Promise<void> =>
        new Promise((done) => {
          server.close(() => done());
          server.closeAllConnections();
        });
      resolve({ port: (server.address() as AddressInfo).port, close });
    });
  });
}

/** `metrics` false: no request metrics and no anomaly detection, to measure what they cost. */
async function startSidecarServer(mode: 'off' | 'async' | 'strict', upstreamPort: number, metrics = true): Promise<Served> {
  // Imported here, not at the top, so the baselines still run while proxy/ does not load.
  const { sidecarConfig } = await import('../proxy/config.js');
  const { startSidecar } = await import('../proxy/sidecar.js');
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-'));
  // FORWARD_ENGINE (bench/README.md): the sidecar's --forward-engine; unset, the sidecar's default.
  const engine = process.env.FORWARD_ENGINE;
  if (engine !== undefined && engine !== '' && engine !== 'http-proxy' && engine !== 'undici') throw new Error(`FORWARD_ENGINE: expected http-proxy or undici, got ${JSON.stringify(engine)}`);
  const sidecar = await startSidecar(
    sidecarConfig({
      ...(engine === 'http-proxy' || engine === 'undici' ? { forwardEngine: engine } : {}),
      service: 'bench',
      appPort: upstreamPort,
      auditMode: mode,
      journalDir: join(dir, 'journal'),
      redactionKeyFile: join(dir, 'redaction.key'),
      keyFile: join(dir, 'sidecar.key'),
      ...(metrics ? {} : { requestMetrics: false, alerts: { ...sidecarConfig({}).alerts, intervalMs: 0 } }),
    }),
  );
  if (sidecar.ports.inbound === undefined) throw new Error('sidecar started without an inbound listener');
  return {
    port: sidecar.ports.inbound,
    async close() {
      await sidecar.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function start(kind: ServerKind, upstreamPort: number): Promise<Served> {
  switch (kind) {
    case 'upstream':
      return listen(createUpstream());
    case 'http-proxy':
      return listen(createHttpProxyBaseline(upstreamPort));
    case 'undici':
      return listen(createUndiciBaseline(upstreamPort));
    case 'sidecar-off':
      return startSidecarServer('off', upstreamPort);
    case 'sidecar-async':
      return startSidecarServer('async', upstreamPort);
    case 'sidecar-async-no-metrics':
      return startSidecarServer('async', upstreamPort, false);
    case 'sidecar-strict':
      return startSidecarServer('strict', upstreamPort);
  }
}

const kind = process.argv[2] as ServerKind;
const upstreamPort = Number(process.argv[3] ?? 0);
if (!SERVER_KINDS.includes(kind) || (kind !== 'upstream' && !(upstreamPort > 0))) {
  console.error(`usage: serve.ts <${SERVER_KINDS.join('|')}> [upstreamPort]`);
  process.exit(2);
}
const served = await start(kind, upstreamPort);
process.stdout.write(JSON.stringify({ port: served.port }) + '\n');
// SIGINT too: Ctrl-C on `npm run bench` reaches the whole process group, and a sidecar's
// temp journal should still be removed.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    served.close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`serve.ts ${kind}: close failed`, err);
        process.exit(1);
      },
    );
  });
}
