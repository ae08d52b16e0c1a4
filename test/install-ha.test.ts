import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { installOptions } from '../control/cli/install.js';
import { renderInstall } from '../control/install/render-install.js';
import { NATS, NATS_CONFIG_FILE, natsUrls, SERVER_NAME_ENV } from '../control/install/nats-cluster.js';
import { NATS_SERVER } from './cluster/image-registry.js';
import { startProcess } from './helpers/child.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { allows, type Peer, type Policy } from './helpers/network-policy.js';
import { tempDir } from './helpers/sidecar.js';

// `auditmesh install --ha`: the collector as a tier on a NATS JetStream cluster, as rendered.
// test/cluster-shop.test.ts runs it in the harness (three servers forming a cluster).

type Obj = Awaited<ReturnType<typeof renderInstall>>[number];
type Container = { name: string; image: string; args: string[]; env?: Array<{ name: string; value?: string; valueFrom?: unknown }>; volumeMounts: Array<{ name: string; mountPath: string }>; startupProbe: { httpGet: { path: string; port: string } }; readinessProbe: { httpGet: { path: string } }; livenessProbe: { httpGet: { path: string } } };
type PodSpec = { containers: Container[]; volumes: Array<{ name: string; [k: string]: unknown }>; affinity?: unknown };
type Workload = Obj & { spec: { replicas: number; strategy?: { type: string }; podManagementPolicy?: string; serviceName?: string; volumeClaimTemplates?: Array<{ metadata: { name: string }; spec: { resources: { requests: { storage: string } }; storageClassName?: string } }>; template: { spec: PodSpec } } };

const render = async (args: string[]): Promise<Obj[]> => renderInstall(installOptions(args));
const get = (objects: Obj[], kind: string, name: string): Obj => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name} among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found;
};
const configOf = (objects: Obj[]): string => (get(objects, 'ConfigMap', NATS) as Obj & { data: Record<string, string> }).data[NATS_CONFIG_FILE]!;

test('install --ha: every object validates, and the tier replaces the single collector and its volume', async (t) => {
  for (const args of [['--ha'], ['--ha', '--certs', 'self-signed', '--monitoring', '--storage-class', 'fast-ssd', '--nats-storage', '50Gi', '--collector-replicas', '5']]) {
    const objects = await render(args);
    t.deepEqual(objects.map(schemaErrors).filter((e) => e !== null), [], args.join(' '));
  }
  const objects = await render(['--ha']);
  t.false(objects.some((o) => o.kind === 'PersistentVolumeClaim'), 'no collector store volume: the stream is the store');
  for (const [kind, name] of [['ConfigMap', NATS], ['Service', `${NATS}-headless`], ['Service', NATS], ['StatefulSet', NATS], ['PodDisruptionBudget', NATS], ['NetworkPolicy', NATS], ['Deployment', 'auditmesh-collector'], ['Service', 'auditmesh-collector'], ['PodDisruptionBudget', 'auditmesh-collector']]) {
    t.truthy(get(objects, kind!, name!));
  }
  const single = await render([]);
  t.false(single.some((o) => o.metadata.name.startsWith(NATS)), 'the default install has no NATS');
});

test('install --ha: three NATS servers, one per node, each with its own volume, at most one down at a time', async (t) => {
  const objects = await render(['--ha', '--storage-class', 'fast-ssd', '--nats-storage', '50Gi', '--nats-image', 'registry.example/nats:2.9.25']);
  const set = get(objects, 'StatefulSet', NATS) as Workload;
  t.is(set.spec.replicas, 3);
  t.is(set.spec.podManagementPolicy, 'Parallel', 'no server is ready before a quorum runs: OrderedReady would wait forever on the first');
  t.is(set.spec.serviceName, `${NATS}-headless`);
  t.like(get(objects, 'Service', `${NATS}-headless`), { spec: { clusterIP: 'None', publishNotReadyAddresses: true } });
  t.like(set.spec.volumeClaimTemplates?.[0], { metadata: { name: 'data' }, spec: { resources: { requests: { storage: '50Gi' } }, storageClassName: 'fast-ssd' } });
  t.like(set.spec.template.spec.affinity, { podAntiAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'app.kubernetes.io/name': NATS } } }] } });
  const [nats] = set.spec.template.spec.containers;
  t.is(nats!.image, 'registry.example/nats:2.9.25');
  t.deepEqual(nats!.volumeMounts.map((m) => m.name).sort(), ['config', 'data']);
  t.deepEqual(nats!.env?.find((e) => e.name === SERVER_NAME_ENV)?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  t.deepEqual([nats!.startupProbe.httpGet.path, nats!.readinessProbe.httpGet.path, nats!.livenessProbe.httpGet.path], ['/healthz', '/healthz?js-server-only=true', '/healthz?js-enabled-only=true']);
  t.like(get(objects, 'PodDisruptionBudget', NATS), { spec: { maxUnavailable: 1 } });
  const config = configOf(objects);
  t.regex(config, /max_file_store: 48318382080\n/, '90% of the 50Gi volume');
  for (const url of natsUrls('auditmesh-system', 6222)) t.true(config.includes(url), `route ${url}`);
});

test('install --ha: the collectors are the single collector rolled out three times, on JetStream, with the same mounts and an emptyDir for their indexes', async (t) => {
  const single = get(await render([]), 'Deployment', 'auditmesh-collector') as Workload;
  const objects = await render(['--ha']);
  const tier = get(objects, 'Deployment', 'auditmesh-collector') as Workload;
  t.is(tier.spec.replicas, 3);
  t.is(tier.spec.strategy?.type, 'RollingUpdate', 'no ReadWriteOnce volume to hand over: replicas roll');
  const [one] = single.spec.template.spec.containers;
  const [replica] = tier.spec.template.spec.containers;
  // Whatever the single collector mounts (the mesh CA's Secret among them), every replica mounts alike.
  t.deepEqual(replica!.volumeMounts, one!.volumeMounts);
  t.deepEqual(tier.spec.template.spec.volumes.filter((v) => v.name !== 'store'), single.spec.template.spec.volumes.filter((v) => v.name !== 'store'));
  t.like(tier.spec.template.spec.volumes.find((v) => v.name === 'store'), { emptyDir: { sizeLimit: '20Gi' } });
  t.deepEqual(replica!.args, [...one!.args, '--jetstream', natsUrls('auditmesh-system').join(',')]);
  t.is(natsUrls('auditmesh-system')[0], 'nats://auditmesh-nats-0.auditmesh-nats-headless.auditmesh-system.svc:4222');
  t.like(get(objects, 'PodDisruptionBudget', 'auditmesh-collector'), { spec: { maxUnavailable: 1 } });
  t.is((await render(['--ha', '--collector-replicas', '5'])).filter((o) => o.kind === 'Deployment' && o.metadata.name === 'auditmesh-collector').map((o) => (o as Workload).spec.replicas)[0], 5);
  t.throws(() => installOptions(['--ha', '--collector-replicas', '1']), { message: /--collector-replicas: at least 2/ });
  t.throws(() => installOptions(['--ha', '--nats-storage', 'lots']), { message: /--nats-storage: expected a quantity/ });
});

test('install --ha: NATS takes clients only from the collectors and routes only from its own servers', async (t) => {
  const policies = (await render(['--ha'])).filter((o) => o.kind === 'NetworkPolicy') as unknown as Policy[];
  t.deepEqual(policies.map(schemaErrors).filter((e) => e !== null), []);
  const here = (app: string): Peer => ({ namespace: 'auditmesh-system', namespaceLabels: {}, podLabels: { 'app.kubernetes.io/name': app } });
  const collector = here('auditmesh-collector');
  const nats = here(NATS);
  const injector = here('auditmesh-injector');
  const shop: Peer = { namespace: 'shop', namespaceLabels: {}, podLabels: { 'app.kubernetes.io/name': 'auditmesh-collector' } };
  t.true(allows(policies, NATS, 4222, collector));
  t.false(allows(policies, NATS, 4222, injector), 'another control-plane pod');
  t.false(allows(policies, NATS, 4222, shop), 'a pod elsewhere wearing the collector’s labels');
  t.true(allows(policies, NATS, 6222, nats));
  t.false(allows(policies, NATS, 6222, collector), 'routes are for servers only');
  t.false(allows(policies, NATS, 8222, collector), 'monitoring is for the kubelet’s probes (from the node)');
  t.true(allows(policies, 'auditmesh-collector', 9400, shop), 'sidecars still ship to the tier');
});

test('install --ha: nats-server 2.9 accepts the rendered nats.conf with the pod name in SERVER_NAME, and refuses it without', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, NATS_CONFIG_FILE);
  await writeFile(file, configOf(await render(['--ha', '--namespace', 'audit'])));
  const check = (env: Record<string, string>) => startProcess(t, NATS_SERVER, ['-c', file, '-t'], { PATH: process.env.PATH ?? '', ...env }).done;
  const version = await startProcess(t, NATS_SERVER, ['--version'], { PATH: process.env.PATH ?? '' }).done;
  t.regex(version.stdout, /v2\.9\./, 'the tests run nats-server 2.9');
  const ok = await check({ [SERVER_NAME_ENV]: 'auditmesh-nats-1' });
  t.is(ok.code, 0, ok.stdout + ok.stderr);
  t.regex(ok.stdout + ok.stderr, /configuration file .* is valid/);
  const unnamed = await check({});
  t.not(unnamed.code, 0, 'the server name comes from the environment');
  t.regex(unnamed.stdout + unnamed.stderr, /SERVER_NAME/);
});
