import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Container } from '../control/injector/pod.js';
import { runCli, runInProcess } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { assertCarriesMeshCa, writeMeshCa } from './helpers/ca-bundle.js';

const MANIFEST = 'test/fixtures/manifests/shop.yaml';
type Obj = { kind: string; metadata?: { name?: string }; spec?: Record<string, unknown>; items?: Obj[] };

function podSpecOf(o: Obj): { initContainers?: Container[]; containers: Container[] } {
  if (o.kind === 'Pod') return o.spec as never;
  if (o.kind === 'CronJob') return (o.spec as { jobTemplate: { spec: { template: { spec: never } } } }).jobTemplate.spec.template.spec;
  return (o.spec as { template: { spec: never } }).template.spec;
}
const initNames = (o: Obj): string[] => (podSpecOf(o).initContainers ?? []).map((c) => c.name);

test('auditmesh inject -f injects the pods of Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Pods and Lists; other objects pass through', async (t) => {
  const r = await runCli(['inject', '-f', MANIFEST]);
  t.is(r.code, 0, r.stderr);
  const objects = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
  t.deepEqual(objects.map((o) => o.kind), ['Deployment', 'Service', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob', 'Pod', 'List']);
  const all = objects.flatMap((o) => (o.kind === 'List' ? o.items! : [o]));
  t.deepEqual(all.map(schemaErrors).filter((e) => e !== null), []);
  for (const o of all.filter((x) => x.kind !== 'Service' && x.metadata?.name !== 'debug')) t.deepEqual(initNames(o).slice(0, 2), ['auditmesh-init', 'auditmesh-proxy'], o.kind);
  // Existing init containers run after the proxy is up.
  t.deepEqual(initNames(all.find((o) => o.kind === 'StatefulSet')!), ['auditmesh-init', 'auditmesh-proxy', 'restore']);
  // The pod's own opt-out holds offline too; the Service is untouched.
  t.deepEqual(initNames(all.find((o) => o.metadata?.name === 'debug')!), []);
  t.deepEqual(objects[1], { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace: 'shop' }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 'http' }] } });
  // The template's annotations are honoured.
  const initEnv = podSpecOf(objects[0]!).initContainers![0]!.env as Array<{ name: string; value: string }>;
  t.true(initEnv.some((e) => e.name === 'AUDITMESH_EXCLUDE_OUTBOUND_PORTS' && e.value === '5432'));
  t.regex(r.stderr, /Deployment\/orders: injected/);
  t.regex(r.stderr, /Pod\/debug: not injected \(opted-out\)/);
  t.regex(r.stderr, /DaemonSet\/log-shipper: injected\n {2}auditmesh: the pod declares no TCP container port/);

  // Injecting the output again changes nothing.
  const dir = await tempDir(t);
  await writeFile(join(dir, 'injected.yaml'), r.stdout);
  const again = await runInProcess(['inject', '-f', join(dir, 'injected.yaml'), '-o', 'json']);
  t.is(again.code, 0);
  t.deepEqual(again.stdout.trim().split('\n').map((l) => JSON.parse(l)), objects);
  t.regex(again.stderr, /Deployment\/orders: not injected \(already-injected\)/);
});

test('auditmesh inject: container mode and policy flags apply; usage errors exit 2, an unreadable manifest exits 1', async (t) => {
  const r = await runInProcess(['inject', '-f', MANIFEST, '-o', 'json', '--sidecar-mode', 'container', '--proxy-uid', '2000']);
  t.is(r.code, 0, r.stderr);
  const deployment = JSON.parse(r.stdout.split('\n')[0]!) as Obj;
  const spec = podSpecOf(deployment);
  t.deepEqual(spec.containers.map((c) => c.name), ['auditmesh-proxy', 'orders']);
  t.is(spec.containers[0]!.securityContext!.runAsUser, 2000);

  t.is((await runInProcess(['inject'])).code, 2);
  t.is((await runInProcess(['inject', '-f', MANIFEST, '--sidecar-mode', 'sometimes'])).code, 2);
  const missing = await runInProcess(['inject', '-f', 'no/such/file.yaml']);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /cannot read no\/such\/file\.yaml/);
  const dir = await tempDir(t);
  await writeFile(join(dir, 'broken.yaml'), 'kind: Pod\nspec: [unclosed\n');
  t.is((await runInProcess(['inject', '-f', join(dir, 'broken.yaml')])).code, 1);
});

test('auditmesh inject --ca-file embeds the mesh CA in every injected pod; without it, none, and stderr says so; a key file is refused', async (t) => {
  const meshCa = await writeMeshCa(t);
  const r = await runInProcess(['inject', '-f', MANIFEST, '-o', 'json', '--ca-file', meshCa.certFile]);
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stderr, /no --ca-file/);
  const objects = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Obj);
  const workloads = objects.flatMap((o) => (o.kind === 'List' ? o.items! : [o])).filter((o) => o.kind !== 'Service' && o.metadata?.name !== 'debug');
  t.true(workloads.length >= 6);
  for (const o of workloads) {
    const template = o.kind === 'Pod' ? o : o.kind === 'CronJob' ? (o.spec as { jobTemplate: { spec: { template: Obj } } }).jobTemplate.spec.template : (o.spec as { template: Obj }).template;
    assertCarriesMeshCa(t, { apiVersion: 'v1', kind: 'Pod', metadata: template.metadata as never, spec: podSpecOf(o) as never }, meshCa);
  }

  const without = await runInProcess(['inject', '-f', MANIFEST, '-o', 'json']);
  t.is(without.code, 0);
  t.regex(without.stderr, /no --ca-file: the pods get no mesh CA bundle/);
  t.false(without.stdout.includes('auditmesh-ca') || without.stdout.includes('AUDITMESH_CA_FILE') || without.stdout.includes('auditmesh.io/ca-bundle'));

  const key = await runInProcess(['inject', '-f', MANIFEST, '--ca-file', meshCa.keyFile]);
  t.is(key.code, 1);
  t.regex(key.stderr, /holds a private key/);
  t.is(key.stdout, '');
});
