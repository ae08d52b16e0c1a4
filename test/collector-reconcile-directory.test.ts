import test from 'ava';
import http from 'node:http';
import type { ReconciledCall } from '../control/collector/reconcile/reconciled-call.js';
import { certifiedWorkload, claimingStream } from './helpers/directory.js';
import { createTokenIssuer, sidecarToken, startIdentityCollector, startIdentitySidecar } from './helpers/identity.js';
import { closeServer, rawExchange } from './helpers/net.js';
import { eventually } from './helpers/shipping.js';
import type { TestCollector } from './helpers/collector.js';

// Reconciliation knows a call's other end is a meshed sidecar by its service name, and also by
// its address when the mesh directory lists it: a call to a listed pod whose record never came is
// caller-only (a disagreement), one to an unlisted address unpaired-external.

const PAYMENTS_POD = { namespace: 'shop', pod: { name: 'payments-0', uid: 'p-1' }, serviceAccount: { name: 'payments', uid: 'p-2' } };

async function stateOf(c: TestCollector, requestId: string): Promise<string | undefined> {
  const res = await c.get('/v1/reconciliation', c.readAuth);
  const calls = (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l) as ReconciledCall);
  return calls.find((call) => call['audit.request_id'] === requestId)?.state;
}

/** An app on `host` answering 200 to anything. */
async function appOn(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { port: (server.address() as { port: number }).port, close: () => closeServer(server) };
}

test('an unanswered call to an address the directory lists is caller-only; to an unlisted address, unpaired-external', async (t) => {
  const issuer = await createTokenIssuer();
  // The listed pod claims 127.0.0.5 from 127.0.0.1: believed only with --directory-trust-claimed-ip.
  const collector = await startIdentityCollector(t, issuer, { reconcileGraceMs: 1_000, directoryTrustClaimedIp: true });
  const payments = await certifiedWorkload(t, collector, issuer, PAYMENTS_POD);
  // A meshed pod whose sidecar ships nothing: its end of a call never arrives.
  await claimingStream(t, collector, 'shop/payments-0', '127.0.0.5', { token: await sidecarToken(issuer, PAYMENTS_POD), workload: payments, service: 'payments' });
  const listed = await appOn('127.0.0.5');
  t.teardown(listed.close);
  const unlisted = await appOn('127.0.0.6');
  t.teardown(unlisted.close);
  const caller = await startIdentitySidecar(t, collector, issuer);
  const call = (host: string, port: number, id: string): Promise<string> =>
    rawExchange(caller.sidecar.ports.outbound, `GET http://${host}:${port}/pay HTTP/1.1\r\nHost: ${host}:${port}\r\nx-request-id: ${id}\r\nConnection: close\r\n\r\n`);
  t.regex(await call('127.0.0.5', listed.port, 'to-listed'), /^HTTP\/1\.1 200/);
  t.regex(await call('127.0.0.6', unlisted.port, 'to-unlisted'), /^HTTP\/1\.1 200/);
  const decided = async (id: string): Promise<boolean> => ![undefined, 'pending'].includes(await stateOf(collector, id));
  await eventually('both calls decided', async () => (await decided('to-listed')) && (await decided('to-unlisted')));
  t.is(await stateOf(collector, 'to-listed'), 'caller-only');
  t.is(await stateOf(collector, 'to-unlisted'), 'unpaired-external');
});
