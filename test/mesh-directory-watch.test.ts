import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openDirectory } from '../proxy/mesh/directory-watch.js';
import { certifiedWorkload, claimingStream } from './helpers/directory.js';
import { createTokenIssuer, LEDGER_POD, ORDERS_POD, sidecarToken, startIdentityCollector, startIdentitySidecar } from './helpers/identity.js';
import { startTestCollector } from './helpers/collector.js';
import { eventually, sidecarMetric } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';

// The sidecar's copy of the mesh directory (proxy/mesh/directory-watch.ts): a Directory.Watch
// stream to the collector with the shipper's credentials, reopened with backoff; stale (fresh()
// false) once nothing has come for its bound, keeping what it knew.

const ORDERS_ID = 'shop/orders-7d9f8b6c5d-x2x7q';
const ORDERS_SPIFFE = 'spiffe://cluster.local/ns/shop/sa/orders';

test('the watch goes stale while the collector is away, keeps what it knew, and is current again once the collector is back on its address', async (t) => {
  const staleAfterMs = 1_500;
  const issuer = await createTokenIssuer();
  const first = await startIdentityCollector(t, issuer, { directoryKeepaliveMs: 300 });
  const orders = await certifiedWorkload(t, first, issuer, ORDERS_POD);
  const token = await sidecarToken(issuer, ORDERS_POD);
  await claimingStream(t, first, ORDERS_ID, '127.0.0.1', { token, workload: orders });
  const logged: string[] = [];
  const directory = openDirectory({ target: first.grpcAddress, tls: { caPem: first.ca!.certPem, credentials: orders.credentials }, staleAfterMs, backoffBaseMs: 50, backoffMaxMs: 200, log: (level, msg, fields) => logged.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`) });
  t.teardown(() => directory.close());
  await eventually('the first snapshot', () => directory.fresh() && directory.lookup('127.0.0.1') !== undefined);
  t.deepEqual(directory.lookup('127.0.0.1'), { identity: ORDERS_SPIFFE, sidecarId: ORDERS_ID, service: 'orders' });
  t.is(directory.lookup('127.0.0.2'), undefined);
  // Keepalives hold it fresh past its bound while nothing changes.
  await new Promise((resolve) => setTimeout(resolve, staleAfterMs + 500));
  t.true(directory.fresh(), 'kept current by keepalives');

  // Its watch streams end as close() starts; the last keepalive came at most 300 ms before.
  const closing = first.close();
  const goneAt = Date.now();
  await eventually('stale after the bound', () => !directory.fresh(), 10_000);
  t.true(Date.now() - goneAt >= staleAfterMs - 400, `stale ${Date.now() - goneAt} ms after the collector went, its bound is ${staleAfterMs} ms`);
  await closing;
  t.deepEqual(directory.lookup('127.0.0.1'), { identity: ORDERS_SPIFFE, sidecarId: ORDERS_ID, service: 'orders' }, 'what it knew is kept while stale');

  // The collector comes back on the same address (same CA); the sidecar of orders reconnects there.
  const second = await startIdentityCollector(t, issuer, { grpcPort: first.grpcPort, identity: { caDir: first.caDir, createCa: false }, directoryKeepaliveMs: 300 });
  await eventually('current again', () => directory.fresh() && directory.connected, 15_000);
  t.is(directory.lookup('127.0.0.1'), undefined, 'the new snapshot replaces the old copy: orders has not reconnected yet');
  await claimingStream(t, second, ORDERS_ID, '127.0.0.1', { token, workload: orders });
  await eventually('orders listed again', () => directory.lookup('127.0.0.1')?.identity === ORDERS_SPIFFE);
  t.true(logged.some((l) => l.includes('mesh directory watch ended; reopening')));
});

test('with the shared token (no mesh CA) the watch opens; with a wrong token it never becomes current', async (t) => {
  const collector = await startTestCollector(t);
  const dir = await tempDir(t);
  const good = join(dir, 'good');
  const bad = join(dir, 'bad');
  await writeFile(good, `${collector.token}\n`);
  await writeFile(bad, 'wrong\n');
  const log = (): void => {};
  const ok = openDirectory({ target: collector.grpcAddress, tokenFile: good, backoffBaseMs: 50, backoffMaxMs: 200, log });
  t.teardown(() => ok.close());
  const refused = openDirectory({ target: collector.grpcAddress, tokenFile: bad, backoffBaseMs: 50, backoffMaxMs: 200, log });
  t.teardown(() => refused.close());
  await eventually('the token watch is current', () => ok.fresh() && ok.connected);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  t.false(refused.fresh());
  t.false(refused.connected);
});

test('a sidecar with identity and --pod-ip is listed by the collector and sees itself in its own directory, with the directory gauges on /metrics', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const s = await startIdentitySidecar(t, collector, issuer, { podIp: '127.0.0.1' });
  await eventually('listed in its own copy', () => s.sidecar.directory.lookup('127.0.0.1') !== undefined);
  t.deepEqual(s.sidecar.directory.lookup('127.0.0.1'), { identity: `spiffe://cluster.local/ns/${LEDGER_POD.namespace}/sa/${LEDGER_POD.serviceAccount.name}`, sidecarId: 'shop/ledger-0', service: 'ledger' });
  t.true(s.sidecar.directory.fresh());
  t.is(await sidecarMetric(s.sidecar, 'auditmesh_directory_entries'), 1);
  const age = await sidecarMetric(s.sidecar, 'auditmesh_directory_update_age_seconds');
  t.true(age >= 0 && age < 15, `seconds since the last update: ${age}`);
});
