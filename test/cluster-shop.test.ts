import test from 'ava';
import { join } from 'node:path';
import { ROOT } from './helpers/child.js';
import { runFromImage } from './helpers/image-process.js';
import { requireInterception } from './helpers/netns.js';
import { productionImage } from './helpers/production-image.js';
import { startCluster } from './cluster/cluster.js';
import { rendered } from './cluster/manifests.js';

// The default install, as `auditmesh install | kubectl apply -f -` applies it, and two apps as
// `auditmesh inject -f` renders them, run by the harness that plays kubelet (test/cluster/).

test.serial('the default install ships: both ends of orders -> inventory (HTTP/1.1 and gRPC) reach the collector verified, every probe passes, and the store verifies', async (t) => {
  if (!requireInterception(t)) return;
  const timings: Record<string, number> = {};
  let mark = performance.now();
  const lap = (name: string): void => {
    timings[name] = Math.round(performance.now() - mark);
    mark = performance.now();
  };
  const cluster = await startCluster(t);
  const install = await rendered(t, ['install', '--certs', 'self-signed', '--replicas', '1']);
  const apps = await rendered(t, ['inject', '-f', join(ROOT, 'test/fixtures/cluster/shop.yaml')]);
  lap('cluster and manifests');

  await cluster.apply(install);
  const collector = cluster.pod('auditmesh-system', 'auditmesh-collector-');
  lap('control plane ready');
  await cluster.apply(apps);
  const orders = cluster.pod('shop', 'orders-');
  const inventory = cluster.pod('shop', 'inventory-');
  lap('apps ready');

  const checkout = await cluster.request(`http://${orders.ip}:8080/checkout?id=42`);
  t.is(checkout.status, 200, JSON.stringify(checkout));
  const answer = JSON.parse(checkout.body!) as { http: { status: number }; grpc: { text?: string; error?: string } };
  t.is(answer.http.status, 200, checkout.body);
  t.is(answer.grpc.text, 'echo item 42', checkout.body);

  // Both ends of both calls, at the collector, from the node (as a user's port-forward would see them).
  const api = `http://${collector.ip}:9401`;
  // A reader as the install grants one: the auditmesh-reader ServiceAccount's token, audience auditmesh-read.
  const readerToken = await cluster.issuer.sign({ namespace: 'auditmesh-system', pod: { name: '', uid: '' }, serviceAccount: { name: 'auditmesh-reader', uid: 'r1' } }, { audience: 'auditmesh-read', expirationSeconds: 600 });
  const asReader = { headers: { authorization: `Bearer ${readerToken}` } };
  t.is((await cluster.request(`${api}/v1/sidecars`)).status, 401, 'no credential, no records');
  const records = async (service: string): Promise<Array<Record<string, unknown>>> => {
    const r = await cluster.request(`${api}/v1/records?service=${service}&limit=1000`, asReader);
    return (r.body ?? '').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  const ends = async () => {
    const [o, i] = await Promise.all([records('orders'), records('inventory')]);
    const find = (list: typeof o, direction: string, match: (r: Record<string, unknown>) => boolean) => list.find((r) => r['audit.direction'] === direction && match(r));
    const http = (r: Record<string, unknown>) => r['url.path'] === '/items/42';
    const grpc = (r: Record<string, unknown>) => r['rpc.method'] === 'Unary';
    return { httpOut: find(o, 'outbound', http), grpcOut: find(o, 'outbound', grpc), httpIn: find(i, 'inbound', http), grpcIn: find(i, 'inbound', grpc) };
  };
  let found = await ends();
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && Object.values(found).some((r) => r === undefined); ) {
    await new Promise((r) => setTimeout(r, 250));
    found = await ends();
  }
  const collectorLog = collector.containers.get('collector')!.logs();
  for (const [end, record] of Object.entries(found)) t.truthy(record, `${end} never reached the collector; collector log:\n${collectorLog}\nsidecar log:\n${orders.containers.get('auditmesh-proxy')!.logs()}`);
  t.is(found.httpOut?.['http.response.status_code'], 200);
  t.is(found.grpcIn?.['rpc.grpc.status_code'], 0);
  lap('records at the collector');

  const sidecars = JSON.parse((await cluster.request(`${api}/v1/sidecars`, asReader)).body ?? '[]') as Array<{ id: string; verified: boolean }>;
  for (const pod of [orders, inventory]) t.like(sidecars.find((s) => s.id === `shop/${pod.name}`), { verified: true }, JSON.stringify(sidecars));

  // Every probe the manifests declare ran from the node and passed; none failed once it had passed.
  const probes = cluster.pods.flatMap((p) => p.probes.map((r) => ({ pod: p.name, ...r })));
  t.true(probes.length >= 10, JSON.stringify(probes));
  for (const p of probes) {
    t.true(p.passed > 0, `${p.pod}/${p.container} ${p.kind} never passed (${p.last})`);
    t.is(p.failedAfterPass, 0, `${p.pod}/${p.container} ${p.kind} failed after passing (${p.last})`);
  }

  for (const pod of [orders, inventory]) await pod.stop();
  const exits = await collector.stop();
  t.is(exits.get('collector')?.code, 0, exits.get('collector')?.stderr);
  const verify = await runFromImage(t, await productionImage(), ['verify', await cluster.claimDir('auditmesh-system', 'auditmesh-collector-store')]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  lap('stopped and verified');
  t.log(`scenario timings (ms): ${JSON.stringify(timings)}`);
});
