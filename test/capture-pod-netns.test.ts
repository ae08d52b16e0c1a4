import test from 'ava';
import type { Pod } from '../control/injector/pod.js';
import type { JournalRecord } from '../ledger/record.js';
import { requireInterception, sh, startAgent } from './helpers/netns.js';
import { APP_UID, CLIENT, POD_IP as POD_TO_CLIENT, PROXY_UID, SERVER, startPod } from './helpers/netns-pod.js';

const SERVER_EXCLUDED_CIDR_ADDRESS = '10.77.3.2';

/** The pod as a user would write it; the test applies exactly what the injector makes of it. */
const POD: Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name: 'orders-6c9f7d8b4-x2x7q',
    labels: { app: 'orders' },
    annotations: {
      'auditmesh.io/exclude-inbound-ports': '8090',
      'auditmesh.io/exclude-outbound-ports': '9000',
      'auditmesh.io/exclude-outbound-cidrs': '10.77.3.0/24',
    },
  },
  spec: { containers: [{ name: 'orders', image: 'orders:1', ports: [{ containerPort: 8080 }, { containerPort: 8090 }, { containerPort: 8091 }] }] },
};

test('a pod built from network namespaces: inbound and outbound traffic of an unmodified app (HTTP and opaque TCP) is captured by the init script and audited by the sidecar', async (t) => {
  if (!requireInterception(t)) return;
  const started = performance.now();

  // client ⇄ pod ⇄ server, each a network namespace; the init script and sidecar with the injected env.
  const pod = await startPod(t, POD);
  const { ns, server, client } = pod;
  const [podToServer, serverToPod] = pod.serverLink;
  await sh('ip', '-n', ns.server, 'addr', 'add', `${SERVER_EXCLUDED_CIDR_ADDRESS}/24`, 'dev', serverToPod);
  await sh('ip', '-n', ns.pod, 'route', 'add', '10.77.3.0/24', 'dev', podToServer);
  t.regex(pod.init, /auditmesh-init: inbound -> :15006, outbound -> :15001, uid 1337 exempt/);

  const fromApp = await startAgent(t, ns.pod, APP_UID);
  const asProxy = await startAgent(t, ns.pod, PROXY_UID);
  const viaApp = async (url: string, host?: string): Promise<{ status: number; headers: Record<string, string>; body: string }> =>
    (await pod.viaApp('/call', host ? { url, host } : { url })) as { status: number; headers: Record<string, string>; body: string };
  const seenByServer = (): Array<{ port: number; url: string; headers: Record<string, string>; local: string }> =>
    server.output().stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

  // Inbound: the client calls the app's port; the sidecar answers in its place and the app sees who called.
  const hello = await client(`http://${POD_TO_CLIENT}:8080/hello`);
  const helloSeen = JSON.parse(hello.body!);
  t.is(helloSeen.port, 8080);
  t.is(helloSeen.headers['x-forwarded-for'], CLIENT);
  t.regex(helloSeen.headers.traceparent, /^00-[0-9a-f]{32}-/);
  // Another declared port goes to that port (original destination), not to the app port.
  t.is(JSON.parse((await client(`http://${POD_TO_CLIENT}:8091/other-port`)).body!).port, 8091);
  // An excluded inbound port reaches the app untouched.
  const direct = JSON.parse((await client(`http://${POD_TO_CLIENT}:8090/excluded-inbound`)).body!);
  t.is(direct.headers.traceparent, undefined);

  // Outbound, by name: Host says a service name the pod cannot resolve here; the original destination routes it.
  const byName = await viaApp(`http://${SERVER}:80/items/1`, 'inventory.shop.svc.cluster.local');
  t.is(byName.status, 200);
  t.is(JSON.parse(byName.body).headers['x-auditmesh-client'], 'orders');
  // Outbound to an IP literal on a non-default port.
  const literal = await viaApp(`http://${SERVER}:8081/stock?sku=42`);
  t.like(JSON.parse(literal.body), { port: 8081, url: '/stock?sku=42', local: SERVER });
  t.is(JSON.parse(literal.body).headers['x-auditmesh-client'], 'orders');
  // Excluded outbound port and CIDR: the server is reached directly, without the sidecar.
  t.is(JSON.parse((await viaApp(`http://${SERVER}:9000/excluded-port`)).body).headers['x-auditmesh-client'], undefined);
  t.is(JSON.parse((await viaApp(`http://${SERVER_EXCLUDED_CIDR_ADDRESS}:80/excluded-cidr`)).body).headers['x-auditmesh-client'], undefined);
  // The app's own outbound call, straight from the pod (not triggered by an inbound request).
  t.is(JSON.parse((await fromApp(`http://${SERVER}:80/from-app`)).body!).headers['x-auditmesh-client'], 'orders');
  // Opaque TCP from the app (6379, an opaque port): relayed to its original destination and recorded.
  const tcpEcho = JSON.parse((await client(`http://${POD_TO_CLIENT}:8080/tcp?host=${SERVER}&port=6379`)).body!);
  t.is(tcpEcho.echoed, 'PING 42\r\n');
  // Opaque TCP that ends its sending side first (socket.end(data)) still gets the server's reply through the relay.
  const halfClosed = JSON.parse((await client(`http://${POD_TO_CLIENT}:8080/tcp-end?host=${SERVER}&port=7070&data=hello%20after%20end`)).body!);
  t.is(halfClosed.reply, 'echo:hello after end', JSON.stringify(halfClosed));
  // The proxy uid is never redirected: no loop, no record.
  t.is(JSON.parse((await asProxy(`http://${SERVER}:80/as-proxy-uid`)).body!).headers['x-auditmesh-client'], undefined);

  // Each outbound request reached the server exactly once: the sidecar's own connection was not captured again.
  const seen = seenByServer();
  for (const path of ['/items/1', '/stock?sku=42', '/from-app']) t.is(seen.filter((s) => s.url === path).length, 1, path);

  const records = await pod.records();
  const only = (direction: string, path: string): JournalRecord[] => records.filter((r) => r['audit.direction'] === direction && r['url.path'] === path);

  const inbound = only('inbound', '/hello');
  t.is(inbound.length, 1);
  t.like(inbound[0], { 'audit.service': 'orders', 'client.address': CLIENT, 'server.port': 8080, 'http.response.status_code': 200 });
  t.like(only('inbound', '/other-port')[0], { 'server.port': 8091 });
  t.is(only('inbound', '/excluded-inbound').length, 0);

  t.is(only('outbound', '/items/1').length, 1);
  // The record names where the bytes went; the Host header is the claim beside it, and names the peer.
  t.like(only('outbound', '/items/1')[0], { 'peer.service': 'inventory', 'server.address': SERVER, 'server.port': 80, 'audit.claimed.server': 'inventory.shop.svc.cluster.local', 'http.response.status_code': 200 });
  t.like(only('outbound', '/stock')[0], { 'server.address': SERVER, 'server.port': 8081, 'url.query': 'sku=42', 'http.response.status_code': 200 });
  t.is(only('outbound', '/from-app').length, 1);
  for (const path of ['/excluded-port', '/excluded-cidr', '/as-proxy-uid']) t.is(only('outbound', path).length, 0, path);
  const tcpRecords = records.filter((r) => r['audit.kind'] === 'tcp' && r['audit.direction'] === 'outbound');
  t.is(tcpRecords.length, 2);
  t.like(tcpRecords.find((r) => r['server.port'] === 6379), { 'server.address': SERVER, 'audit.bytes_in': 9, 'audit.bytes_out': 9 });
  t.like(tcpRecords.find((r) => r['server.port'] === 7070), { 'server.address': SERVER, 'audit.bytes_in': 15, 'audit.bytes_out': 20 });
  t.log(records.map((r) => `${r['audit.direction']} ${r['url.path']} ${r['server.address']}:${r['server.port']} ${r['http.response.status_code']}`).join('\n'));
  t.log(`pod built, captured and checked in ${Math.round(performance.now() - started)} ms; ${records.length} records`);
});
