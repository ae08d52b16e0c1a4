import test from 'ava';
import type { Pod } from '../control/injector/pod.js';
import { requireInterception } from './helpers/netns.js';
import { SERVER, startPod } from './helpers/netns-pod.js';

const POD: Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'checkout-7b9d6f5c4-k8p3w', labels: { app: 'checkout' } },
  spec: { containers: [{ name: 'checkout', image: 'checkout:1', ports: [{ containerPort: 8080 }] }] },
};

test('redirected outbound traffic is recorded at the address and port the bytes went to, with the name the app claimed (Host, :authority, SNI) beside it', async (t) => {
  if (!requireInterception(t)) return;
  const pod = await startPod(t, POD);

  // HTTP/1.1: the app dials the server's IP but says Host: payments.shop.
  const h1 = (await pod.viaApp('/call', { url: `http://${SERVER}:8081/pay`, host: 'payments.shop' })) as { status: number; body: string };
  t.is(h1.status, 200);
  t.like(JSON.parse(h1.body), { port: 8081, url: '/pay', local: SERVER, headers: { host: 'payments.shop' } });
  // A Host that names the destination itself is no claim.
  t.is(((await pod.viaApp('/call', { url: `http://${SERVER}:8081/honest` })) as { status: number }).status, 200);
  // HTTP/2 (the path gRPC takes): the app dials the server's IP with :authority payments.shop:443.
  const h2 = (await pod.viaApp('/h2', { host: SERVER, port: '8082', authority: 'payments.shop:443', path: '/pay.v1.Payments/Charge' })) as { status: number; body: string };
  t.is(h2.status, 200, JSON.stringify(h2));
  t.like(JSON.parse(h2.body), { port: 8082, authority: 'payments.shop:443', local: SERVER });
  // TLS, relayed as opaque TCP: the ClientHello names payments.shop.
  await pod.viaApp('/tls', { host: SERVER, port: '7443', sni: 'payments.shop' });
  await pod.server.waitFor(/"port":7443/, 10_000);

  const records = await pod.records();
  const outbound = records.filter((r) => r['audit.direction'] === 'outbound');
  t.like(
    outbound.find((r) => r['url.path'] === '/pay'),
    { 'audit.kind': 'http', 'server.address': SERVER, 'server.port': 8081, 'audit.claimed.server': 'payments.shop', 'peer.service': 'payments', 'http.response.status_code': 200 },
  );
  const honest = outbound.find((r) => r['url.path'] === '/honest');
  t.like(honest, { 'server.address': SERVER, 'server.port': 8081, 'peer.service': 'unknown' });
  t.false('audit.claimed.server' in honest!);
  t.like(
    outbound.find((r) => r['url.path'] === '/pay.v1.Payments/Charge'),
    { 'network.protocol.version': '2', 'server.address': SERVER, 'server.port': 8082, 'audit.claimed.server': 'payments.shop:443', 'peer.service': 'payments', 'http.response.status_code': 200 },
  );
  t.like(
    outbound.find((r) => r['audit.kind'] === 'tcp'),
    { 'network.protocol.name': 'tls', 'tls.client.server_name': 'payments.shop', 'server.address': SERVER, 'server.port': 7443, 'audit.claimed.server': 'payments.shop', 'peer.service': 'payments' },
  );
  t.log(outbound.map((r) => `${r['audit.kind']} ${r['url.path'] ?? ''} → ${r['server.address']}:${r['server.port']} claimed ${r['audit.claimed.server'] ?? '-'} peer ${r['peer.service']}`).join('\n'));
});
