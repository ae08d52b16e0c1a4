import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './helpers/child.js';
import { runFromImage } from './helpers/image-process.js';
import { requireInterception } from './helpers/netns.js';
import { productionImage } from './helpers/production-image.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import { startCluster } from './cluster/cluster.js';
import type { PodHandle } from './cluster/kubelet.js';
import { rendered } from './cluster/manifests.js';
import type { KubeObject } from './cluster/objects.js';

/** Milliseconds each step of a scenario took, logged at its end (the suite's time is budgeted). */
function stopwatch(): { timings: Record<string, number>; lap(name: string): void } {
  const timings: Record<string, number> = {};
  let mark = performance.now();
  return {
    timings,
    lap(name) {
      timings[name] = Math.round(performance.now() - mark);
      mark = performance.now();
    },
  };
}
import { assertCarriesMeshCa } from './helpers/ca-bundle.js';
import { captureBetween } from './helpers/wire-capture.js';
import { applyPatch, type JsonPatchOp } from '../control/injector/json-patch.js';
import type { Pod } from '../control/injector/pod.js';

// The default install, as `auditmesh install | kubectl apply -f -` applies it, and two apps as
// `auditmesh inject -f` renders them, run by the harness that plays kubelet (test/cluster/).
// With the install's mesh CA: every sidecar has its key certified through its pod's token and
// ships over mTLS. A third workload lies in its app label (it says it is orders) under a
// ServiceAccount of its own.

type Rec = Record<string, unknown>;

/** The mesh CA's pair as the install renders it in its Secret. */
function meshCaOf(install: KubeObject[]): { certPem: string; keyPem: string } {
  const secret = install.find((o) => o.kind === 'Secret' && o.metadata.name === 'auditmesh-mesh-ca') as (KubeObject & { data: Record<string, string> }) | undefined;
  if (secret === undefined) throw new Error('the install renders no auditmesh-mesh-ca Secret');
  const decode = (key: string): string => Buffer.from(secret.data[key] ?? '', 'base64').toString('utf8');
  return { certPem: decode('ca.crt'), keyPem: decode('tls.key') };
}

/** The SPIFFE ID of the workload certificate the pod's sidecar obtained from the mesh CA, as it logged it. */
function certifiedIdentity(pod: PodHandle): string | undefined {
  const line = pod.containers.get('auditmesh-proxy')!.logs().split('\n').find((l) => l.includes('"msg":"workload certificate obtained"'));
  return line === undefined ? undefined : ((JSON.parse(line) as { spiffe_id?: string }).spiffe_id ?? undefined);
}

/** Every file of the pod's volumes made from the cluster's objects and the pod's own fields (not its emptyDirs). */
async function volumeFiles(pod: PodHandle): Promise<string[]> {
  const files: string[] = [];
  for (const v of [...pod.volumes.values()].filter((x) => ['secret', 'configMap', 'projected', 'downwardAPI'].includes(x.kind))) {
    for (const e of await readdir(v.path, { withFileTypes: true, recursive: true })) if (e.isFile()) files.push(join(e.parentPath, e.name));
  }
  return files;
}

/**
 * The check the identity work exists for: the records a pod wrote carry the identity its
 * ServiceAccount proves, whatever its app label claims. Its sidecar holds a certificate from the
 * mesh CA for exactly that SPIFFE ID; the collector takes Sync only over mTLS from a certificate
 * naming the same namespace and ServiceAccount as the stream's token, and stamps the writer's
 * proven identity on every record it answers (`audit.identity`), and `audit.identity_mismatch`
 * on those whose `audit.service` is not that ServiceAccount.
 */
function assertRecordsCarryProvenIdentity(t: ExecutionContext, pod: PodHandle, records: Rec[], spiffeId: string, mismatch: boolean): void {
  t.true(records.length > 0, `no records of ${pod.namespace}/${pod.name} at the collector`);
  t.is(certifiedIdentity(pod), spiffeId, `${pod.name}'s sidecar log:\n${pod.containers.get('auditmesh-proxy')!.logs()}`);
  for (const r of records) {
    t.is(r['audit.sidecar_id'], `${pod.namespace}/${pod.name}`);
    t.is(r['audit.identity'], spiffeId, JSON.stringify(r));
    t.is(r['audit.identity_mismatch'], mismatch ? true : undefined, JSON.stringify(r));
  }
}

test.serial('the default install ships over mTLS: every sidecar is certified by the mesh CA through its token; orders -> inventory (HTTP/1.1, gRPC, TCP) crosses the wire sidecar to sidecar as mTLS only, both ends proven and reconciled; a lying pod’s calls reach the collector verified; every probe passes, and the store verifies', async (t) => {
  if (!requireInterception(t)) return;
  // Three app pods and the control plane start one after another's readiness: on a loaded machine that outlasts ava's 120 s.
  t.timeout(360_000);
  const { timings, lap } = stopwatch();
  const cluster = await startCluster(t);
  const install = await rendered(t, ['install', '--certs', 'self-signed', '--replicas', '1']);
  // The bundle `auditmesh inject -f` embeds in each pod: the install's CA certificate, as a user
  // would take it from the applied Secret.
  const meshCa = meshCaOf(install);
  const caFile = join(await tempDir(t), 'ca.crt');
  await writeFile(caFile, meshCa.certPem);
  const injected = async (fixture: string): Promise<KubeObject[]> => rendered(t, ['inject', '-f', join(ROOT, 'test/fixtures/cluster', fixture), '--ca-file', caFile]);
  const apps = [...(await injected('shop.yaml')), ...(await injected('impostor.yaml'))];
  lap('cluster and manifests');

  await cluster.apply(install);
  const collector = cluster.pod('auditmesh-system', 'auditmesh-collector-');
  lap('control plane ready');

  // The injector as installed, called as the API server calls it (its Service name, the caBundle of
  // the webhook configuration), embeds the mesh CA of the install's Secret in the pod it injects.
  const injector = cluster.pod('auditmesh-system', 'auditmesh-injector-');
  const webhook = install.find((o) => o.kind === 'MutatingWebhookConfiguration') as KubeObject & { webhooks: Array<{ clientConfig: { caBundle: string; service: { path: string } } }> };
  const review = await readFile(join(ROOT, 'test/fixtures/admission/deployment-pod.json'), 'utf8');
  const admitted = await cluster.request(`https://${injector.ip}:9443${webhook.webhooks[0]!.clientConfig.service.path}`, { method: 'POST', body: review, headers: { 'content-type': 'application/json' }, ca: Buffer.from(webhook.webhooks[0]!.clientConfig.caBundle, 'base64').toString(), servername: 'auditmesh-injector.auditmesh-system.svc' });
  t.is(admitted.status, 200, JSON.stringify(admitted));
  const { response } = JSON.parse(admitted.body!) as { response: { patch: string } };
  const webhookPod = applyPatch((JSON.parse(review) as { request: { object: Pod } }).request.object, JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as JsonPatchOp[]);
  assertCarriesMeshCa(t, webhookPod, meshCa);
  await cluster.apply(apps);
  const orders = cluster.pod('shop', 'orders-');
  const inventory = cluster.pod('shop', 'inventory-');
  const impostor = cluster.pod('shop', 'impostor-');
  lap('apps ready');

  // Each sidecar was certified before it became ready, for the ServiceAccount its token names.
  t.is(certifiedIdentity(orders), 'spiffe://cluster.local/ns/shop/sa/orders');
  t.is(certifiedIdentity(inventory), 'spiffe://cluster.local/ns/shop/sa/inventory');
  t.is(certifiedIdentity(impostor), 'spiffe://cluster.local/ns/shop/sa/impostor');
  // What an injected pod holds of the mesh CA: its certificate, from the pod's own annotation; never its key.
  for (const pod of [orders, inventory, impostor]) {
    t.is(pod.containers.get('auditmesh-proxy')!.spec.env.AUDITMESH_CA_FILE, '/var/run/secrets/auditmesh.io/ca/ca.crt');
    t.is(await readFile(join(pod.volumes.get('auditmesh-ca')!.path, 'ca.crt'), 'utf8'), meshCa.certPem.trim() + '\n');
    const keyLine = meshCa.keyPem.trim().split('\n')[1]!;
    t.false(JSON.stringify(pod.info.object).includes(keyLine), `${pod.name}'s spec holds the mesh CA's key`);
    for (const file of await volumeFiles(pod)) t.false((await readFile(file, 'utf8')).includes(keyLine), `${pod.name}: ${file} holds the mesh CA's key`);
  }

  // What crosses the node's bridge between the two pods while orders calls inventory: the Service's
  // DNAT sends it pod to pod. Sidecar to sidecar, it must be TLS with the mesh's ALPN, nothing in clear.
  const wire = await captureBetween(t, cluster.network.node, 'br0', orders.ip, inventory.ip);
  const checkout = await cluster.request(`http://${orders.ip}:8080/checkout?id=42`);
  t.is(checkout.status, 200, JSON.stringify(checkout));
  const answer = JSON.parse(checkout.body!) as { http: { status: number }; grpc: { text?: string; error?: string }; tcp?: { text?: string; error?: string } };
  t.is(answer.http.status, 200, checkout.body);
  t.is(answer.grpc.text, 'echo item 42', checkout.body);
  t.is(answer.tcp?.text, 'echo item 42', checkout.body);
  const captured = await wire.stop();
  t.true(captured.packets > 0, `no packet between the two pods: the capture saw nothing (tcpdump: ${captured.summary})`);
  for (const clear of ['GET /items/42', 'HTTP/1.1', 'PRI * HTTP/2.0', 'item 42']) t.false(captured.bytes.includes(clear), `"${clear}" crossed the wire between the pods in clear`);
  t.true(captured.bytes.includes('auditmesh/1'), 'no ClientHello offering the mesh ALPN crossed the wire');

  // Both ends of both calls, at the collector, from the node (as a user's port-forward would see
  // them): over HTTPS, trusting the mesh CA of the install's Secret for the collector's Service name.
  const api = `https://${collector.ip}:9401`;
  const tls = { ca: meshCa.certPem, servername: 'auditmesh-collector.auditmesh-system.svc' };
  // A reader as the install grants one: the auditmesh-reader ServiceAccount's token, audience auditmesh-read.
  const readerToken = await cluster.issuer.sign({ namespace: 'auditmesh-system', pod: { name: '', uid: '' }, serviceAccount: { name: 'auditmesh-reader', uid: 'r1' } }, { audience: 'auditmesh-read', expirationSeconds: 600 });
  const asReader = { ...tls, headers: { authorization: `Bearer ${readerToken}` } };
  t.is((await cluster.request(`${api}/v1/sidecars`, tls)).status, 401, 'no credential, no records');
  // Plain HTTP is not served on the port any more.
  t.not((await cluster.request(`http://${collector.ip}:9401/livez`)).status, 200, 'the collector answers plain HTTP');
  const records = async (service: string): Promise<Array<Record<string, unknown>>> => {
    const r = await cluster.request(`${api}/v1/records?service=${service}&limit=1000`, asReader);
    return (r.body ?? '').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  const ends = async () => {
    const [o, i] = await Promise.all([records('orders'), records('inventory')]);
    const find = (list: typeof o, direction: string, match: (r: Record<string, unknown>) => boolean) => list.find((r) => r['audit.direction'] === direction && match(r));
    const http = (r: Record<string, unknown>) => r['url.path'] === '/items/42';
    const grpc = (r: Record<string, unknown>) => r['rpc.method'] === 'Unary';
    const tcp = (r: Record<string, unknown>) => r['audit.kind'] === 'tcp' && r['server.port'] === 7070;
    return { httpOut: find(o, 'outbound', http), grpcOut: find(o, 'outbound', grpc), tcpOut: find(o, 'outbound', tcp), httpIn: find(i, 'inbound', http), grpcIn: find(i, 'inbound', grpc), tcpIn: find(i, 'inbound', (r) => r['audit.kind'] === 'tcp') };
  };
  let found = await ends();
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && Object.values(found).some((r) => r === undefined); ) {
    await new Promise((r) => setTimeout(r, 250));
    found = await ends();
  }
  // The lying pod's calls: its sidecar stamps the service its label claims.
  const lie = await cluster.request(`http://${impostor.ip}:8080/checkout?id=66`);
  t.is(lie.status, 200, JSON.stringify(lie));
  let lies: Rec[] = [];
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    lies = (await records('orders')).filter((r) => r['audit.sidecar_id'] === `shop/${impostor.name}`);
    if (lies.some((r) => r['url.path'] === '/items/66') && lies.some((r) => r['rpc.method'] === 'Unary')) break;
  }
  t.true(lies.every((r) => r['audit.service'] === 'orders'), 'the impostor claims to be orders');
  // Its records name the ServiceAccount that wrote them, and are flagged: orders is not impostor.
  assertRecordsCarryProvenIdentity(t, impostor, lies, 'spiffe://cluster.local/ns/shop/sa/impostor', true);
  // The honest pods' records carry the identity their ServiceAccounts prove, unflagged.
  for (const [pod, service] of [[orders, 'orders'], [inventory, 'inventory']] as const) {
    const own = (await records(service)).filter((r) => r['audit.sidecar_id'] === `shop/${pod.name}`);
    assertRecordsCarryProvenIdentity(t, pod, own, `spiffe://cluster.local/ns/shop/sa/${service}`, false);
  }

  const collectorLog = collector.containers.get('collector')!.logs();
  for (const [end, record] of Object.entries(found)) t.truthy(record, `${end} never reached the collector; collector log:\n${collectorLog}\nsidecar log:\n${orders.containers.get('auditmesh-proxy')!.logs()}`);
  t.is(found.httpOut?.['http.response.status_code'], 200);
  t.is(found.grpcIn?.['rpc.grpc.status_code'], 0);
  // Each end names the other as its certificate proved it, not as a header claimed it.
  for (const end of ['httpOut', 'grpcOut', 'tcpOut'] as const) t.like(found[end], { 'audit.peer.verified': true, 'peer.identity': 'spiffe://cluster.local/ns/shop/sa/inventory' }, end);
  for (const end of ['httpIn', 'grpcIn', 'tcpIn'] as const) t.like(found[end], { 'audit.peer.verified': true, 'peer.identity': 'spiffe://cluster.local/ns/shop/sa/orders' }, end);
  // The two ends of the HTTP and gRPC calls agree at the collector (its grace period is minutes, so pending until they pair).
  type Call = { state: string; 'audit.request_id': string };
  let calls: Call[] = [];
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    calls = ((await cluster.request(`${api}/v1/reconciliation?service=inventory`, asReader)).body ?? '[]').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Call);
    if (['42-http', '42-grpc'].every((id) => calls.some((c) => c['audit.request_id'] === id && c.state === 'matched'))) break;
  }
  for (const id of ['42-http', '42-grpc']) t.is(calls.find((c) => c['audit.request_id'] === id)?.state, 'matched', `${id}: ${JSON.stringify(calls)}`);
  lap('records at the collector');

  const sidecars = JSON.parse((await cluster.request(`${api}/v1/sidecars`, asReader)).body ?? '[]') as Array<{ id: string; verified: boolean }>;
  for (const pod of [orders, inventory, impostor]) t.like(sidecars.find((s) => s.id === `shop/${pod.name}`), { verified: true }, JSON.stringify(sidecars));
  // The mesh CA issued each sidecar its certificate (and the collector its serving one).
  const metrics = (await cluster.request(`${api}/metrics`, tls)).body ?? '';
  t.true(metricValue(metrics, 'auditmesh_collector_certificates_issued_total') >= 3, metrics.split('\n').filter((l) => l.includes('certif') || l.includes('identity')).join('\n'));

  // Every probe the manifests declare ran from the node and passed; none failed once it had passed.
  const probes = cluster.pods.flatMap((p) => p.probes.map((r) => ({ pod: p.name, ...r })));
  t.true(probes.length >= 10, JSON.stringify(probes));
  for (const p of probes) {
    t.true(p.passed > 0, `${p.pod}/${p.container} ${p.kind} never passed (${p.last})`);
    t.is(p.failedAfterPass, 0, `${p.pod}/${p.container} ${p.kind} failed after passing (${p.last})`);
  }

  for (const pod of [orders, inventory, impostor]) await pod.stop();
  const exits = await collector.stop();
  t.is(exits.get('collector')?.code, 0, exits.get('collector')?.stderr);
  const verify = await runFromImage(t, await productionImage(), ['verify', await cluster.claimDir('auditmesh-system', 'auditmesh-collector-store')]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  lap('stopped and verified');
  t.log(`scenario timings (ms): ${JSON.stringify(timings)}`);
});

// `auditmesh install --ha`: the NATS servers each in their own network namespace, on their own
// claim, finding each other by the headless Service's per-pod names; then the collector replicas.
test.serial('the --ha install runs: three NATS servers on their own volumes form one JetStream cluster that outlives its leader, every probe passes, and the collector replicas start as rendered', async (t) => {
  if (!requireInterception(t)) return;
  const { timings, lap } = stopwatch();
  const cluster = await startCluster(t);
  const install = await rendered(t, ['install', '--ha', '--certs', 'self-signed', '--replicas', '1']);
  // The collectors go second: the harness fails an apply whose container exits.
  const isTier = (o: KubeObject): boolean => o.metadata.name === 'auditmesh-collector' && (o.kind === 'Deployment' || o.kind === 'Service');
  lap('cluster and manifests');

  await cluster.apply(install.filter((o) => !isTier(o)));
  const nats = [0, 1, 2].map((i) => cluster.pod('auditmesh-system', `auditmesh-nats-${i}`));
  lap('NATS ready');
  t.is(new Set(nats.map((p) => p.netns)).size, 3, 'a network namespace each');
  t.is(new Set(nats.map((p) => p.ip)).size, 3);
  for (const pod of nats) {
    const jsz = JSON.parse((await cluster.request(`http://${pod.ip}:8222/jsz`)).body ?? '{}') as { config?: { store_dir?: string }; meta_cluster?: { name?: string; leader?: string; cluster_size?: number } };
    t.like(jsz, { config: { store_dir: '/data/jetstream' }, meta_cluster: { name: 'auditmesh', cluster_size: 3 } }, `${pod.name}: ${JSON.stringify(jsz)}`);
    t.true(nats.some((p) => p.name === jsz.meta_cluster?.leader), `${pod.name} follows a leader among the three: ${jsz.meta_cluster?.leader}`);
    const routez = JSON.parse((await cluster.request(`http://${pod.ip}:8222/routez`)).body ?? '{}') as { server_id?: string; num_routes?: number; routes?: Array<{ remote_id: string; ip: string }> };
    t.is(routez.num_routes, 2, `${pod.name} routes to the two others: ${JSON.stringify(routez.routes)}`);
    const varz = JSON.parse((await cluster.request(`http://${pod.ip}:8222/varz`)).body ?? '{}') as { server_name?: string };
    t.is(varz.server_name, pod.name, 'server_name is the pod name');
    // JetStream keeps its files on the pod's own claim (TEMPLATE-SET-i), which outlives the pod.
    t.true(existsSync(join(await cluster.claimDir('auditmesh-system', `data-${pod.name}`), 'jetstream')), `${pod.name}: nothing on its claim`);
  }

  const tier = cluster.apply(install.filter(isTier));
  const replicas = (): PodHandle[] => cluster.started.filter((p) => p.name.startsWith('auditmesh-collector-'));
  await tier;
  t.is(replicas().length, 3);
  for (const pod of replicas()) t.true(pod.probes.some((p) => p.kind === 'readiness' && p.passed > 0), pod.containers.get('collector')!.logs());
  // The collectors made their stream and buckets on file, a replica on each of the three servers.
  const jsz = JSON.parse((await cluster.request(`http://${nats[0]!.ip}:8222/jsz?accounts=true&streams=true&config=true`)).body ?? '{}') as { account_details?: Array<{ stream_detail?: Array<{ name: string; config?: { num_replicas?: number; storage?: string } }> }> };
  const streams = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
  t.true(streams.some((s) => s.name.startsWith('KV_')) && streams.some((s) => !s.name.startsWith('KV_')), JSON.stringify(streams));
  for (const s of streams) t.like(s.config, { num_replicas: 3, storage: 'file' }, s.name);
  lap('collector replicas');

  // Every probe the NATS servers and the injector declare ran from the node and passed, and none
  // failed its threshold's worth in a row once it had passed (the kubelet would have acted). A
  // Raft election on a loaded machine can fail one readiness check: logged, not fatal.
  const probes = cluster.pods.flatMap((p) => p.probes.map((r) => ({ pod: p.name, ...r })));
  t.true(probes.filter((p) => p.pod.startsWith('auditmesh-nats-')).length === 9, JSON.stringify(probes));
  for (const p of probes) {
    t.true(p.passed > 0, `${p.pod}/${p.container} ${p.kind} never passed (${p.last})`);
    t.true(p.failureRunAfterPass < p.threshold, `${p.pod}/${p.container} ${p.kind} failed ${p.failureRunAfterPass} times in a row after passing (${p.lastFailure})`);
    if (p.failedAfterPass > 0) t.log(`${p.pod}/${p.container} ${p.kind}: ${p.failedAfterPass} failures after passing, at most ${p.failureRunAfterPass} in a row (${p.lastFailure})`);
  }

  // The leader down, as the disruption budget allows one server to be: the other two elect another and stay healthy.
  const leaderOf = async (pod: PodHandle): Promise<string | undefined> => (JSON.parse((await cluster.request(`http://${pod.ip}:8222/jsz`)).body ?? '{}') as { meta_cluster?: { leader?: string } }).meta_cluster?.leader;
  const leader = await leaderOf(nats[0]!);
  const down = nats.find((p) => p.name === leader);
  if (down === undefined) throw new Error(`no leader among the servers: ${leader}`);
  await down.stop();
  const rest = nats.filter((p) => p !== down);
  const healthyWithout = async (): Promise<string[]> =>
    Promise.all(
      rest.map(async (pod) => {
        const health = await cluster.request(`http://${pod.ip}:8222/healthz`);
        const now = await leaderOf(pod);
        return health.status === 200 && rest.some((p) => p.name === now) ? '' : `${pod.name}: ${health.body ?? health.error}, leader ${now}`;
      }),
    );
  let unhealthy = await healthyWithout();
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && unhealthy.some((u) => u !== ''); ) {
    await new Promise((r) => setTimeout(r, 500));
    unhealthy = await healthyWithout();
  }
  t.deepEqual(unhealthy, ['', ''], 'two of three servers keep JetStream');
  lap('one server down');
  t.log(`scenario timings (ms): ${JSON.stringify(timings)}`);
});
