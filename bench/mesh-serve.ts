// Child entry of bench/mesh-tls.ts: one meshed sidecar in its own process, so its CPU is its own
// in /proc. It makes its signing key, has the bench's mesh CA (the collector's own CA code, opened
// from a folder the parent created) certify it for a SPIFFE ID, as Certify would, then starts.
//
//   node bench/mesh-serve.js callee <caDir> <appPort>             prints {"port": <inbound>, "admin": <admin>}
//   node bench/mesh-serve.js caller <caDir> <calleePort> plain|mtls   prints {"port": <outbound>, ...}
//
// The caller routes Host `inventory` to 127.0.0.1:<calleePort> (--resolve). Its mesh directory is
// empty for `plain` and lists 127.0.0.1 as the callee for `mtls`: the only difference between the
// two paths the benchmark compares. Stops cleanly on SIGTERM (and SIGINT).
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { loadOrCreateSigningKey } from '../ledger/keys.js';
import { ED25519 } from '../ledger/x509.js';
import { sidecarConfig, type SidecarConfig } from '../proxy/config.js';
import { EMPTY_DIRECTORY, staticDirectory, type MeshPeer } from '../proxy/mesh/directory.js';
import { startSidecar } from '../proxy/sidecar.js';

/** The two workloads: orders (the caller) calls inventory (the callee). */
const MESH_BENCH_IDS = { caller: 'spiffe://cluster.local/ns/bench/sa/orders', callee: 'spiffe://cluster.local/ns/bench/sa/inventory' } as const;
/** The name the app calls (bench/mesh-tls.ts); the caller's --resolve sends it to the callee sidecar. */
const MESH_BENCH_HOST = 'inventory';

const CERT_TTL_MS = 86_400_000;
const USAGE = 'usage: mesh-serve.ts callee <caDir> <appPort> | caller <caDir> <calleePort> plain|mtls';

const peer = (role: 'caller' | 'callee'): MeshPeer => {
  const service = role === 'caller' ? 'orders' : 'inventory';
  return { identity: MESH_BENCH_IDS[role], service, sidecarId: `bench/${service}-0` };
};

async function main(): Promise<void> {
  const [role, caDir, portArg, variant] = process.argv.slice(2);
  const port = Number(portArg);
  if ((role !== 'caller' && role !== 'callee') || caDir === undefined || !(port > 0 && port < 65536) || (role === 'caller' && variant !== 'plain' && variant !== 'mtls')) {
    console.error(USAGE);
    process.exit(2);
  }
  const dir = await mkdtemp(join(tmpdir(), `auditmesh-mesh-bench-${role}-`));
  const keyFile = join(dir, 'sidecar.key');
  const key = await loadOrCreateSigningKey(keyFile);
  const ca = await openMeshCa(caDir, { create: false });
  const publicKey = await webcrypto.subtle.importKey('spki', key.publicKeySpki, ED25519, true, ['verify']);
  const spiffeId = MESH_BENCH_IDS[role];
  const { chainPem } = await ca.issue(publicKey, { uris: [spiffeId] }, CERT_TTL_MS);
  const here = { host: '127.0.0.1', port };
  const byRole: Partial<SidecarConfig> =
    role === 'callee'
      ? { service: 'inventory', appPort: port, directory: staticDirectory(new Map([['127.0.0.1', peer('caller')]])) }
      : {
          service: 'orders',
          directory: variant === 'mtls' ? staticDirectory(new Map([['127.0.0.1', peer('callee')]])) : EMPTY_DIRECTORY,
          resolve: new Map([[`${MESH_BENCH_HOST}:80`, here]]),
        };
  const sidecar = await startSidecar(
    sidecarConfig({
      auditMode: 'async',
      journalDir: join(dir, 'journal'),
      redactionKeyFile: join(dir, 'redaction.key'),
      keyFile,
      workloadCertificate: { caPem: ca.certPem, current: () => ({ chainPem, spiffeId }) },
      ...byRole,
    }),
  );
  const listening = role === 'callee' ? sidecar.ports.inbound : sidecar.ports.outbound;
  if (listening === undefined) throw new Error(`${role}: the sidecar started without its ${role === 'callee' ? 'inbound' : 'outbound'} listener`);
  process.stdout.write(JSON.stringify({ port: listening, admin: sidecar.ports.admin }) + '\n');
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      sidecar
        .close()
        .then(() => rm(dir, { recursive: true, force: true }))
        .then(
          () => process.exit(0),
          (err: unknown) => {
            console.error(`mesh-serve.ts ${role}: close failed`, err);
            process.exit(1);
          },
        );
    });
  }
}

await main();
