import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCaFiles } from '../control/collector/ingest/mesh-ca.js';
import { fileURLToPath } from 'node:url';
import { parse } from '@marcbachmann/cel-js';
import { runInProcess } from './helpers/child.js';

// The mandatory-audit ValidatingAdmissionPolicy evaluated as the API server would: its rendered
// variables and validations run in a CEL evaluator against the pods `auditmesh inject` renders,
// and against each way around the audit. A rule that stops matching what the injector renders, or
// stops refusing a bypass, fails here.

const ROOT = join(fileURLToPath(import.meta.url), '../..');
const MANIFEST = join(ROOT, 'test/fixtures/manifests/shop.yaml');

type Json = Record<string, unknown>;
interface Policy {
  variables: Array<{ name: string; expression: string }>;
  validations: Array<{ expression: string; message: string }>;
}

async function jsonLines(args: string[]): Promise<Json[]> {
  const r = await runInProcess(args);
  if (r.code !== 0) throw new Error(`auditmesh ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Json);
}

async function renderedPolicy(): Promise<Policy> {
  const objects = await jsonLines(['install', '-o', 'json', '--certs', 'self-signed', '--mandatory-audit-policy']);
  const vap = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy');
  if (vap === undefined) throw new Error('no ValidatingAdmissionPolicy rendered');
  return vap.spec as Policy;
}

/** A mesh CA certificate, as the install's injector embeds one in every pod. */
const caDir = mkdtemp(join(tmpdir(), 'auditmesh-cel-'));
test.after.always(async () => rm(await caDir, { recursive: true, force: true }));
const caFile = (async (): Promise<string> => {
  const file = join(await caDir, 'ca.crt');
  await writeFile(file, (await createCaFiles()).certPem);
  return file;
})();

/** The pods the API server would see for the fixture's workloads, as `auditmesh inject -f` renders them with the install's mesh CA. */
async function injectedPods(): Promise<Array<{ kind: string; pod: Json }>> {
  const objects = await jsonLines(['inject', '-f', MANIFEST, '-o', 'json', '--ca-file', await caFile]);
  return objects
    .filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet' || o.kind === 'Job')
    .map((o) => {
      const template = (o.spec as { template: { metadata?: Json; spec: Json } }).template;
      return { kind: String(o.kind), pod: { apiVersion: 'v1', kind: 'Pod', metadata: { ...template.metadata, namespace: 'shop', name: 'p-1' }, spec: template.spec } };
    });
}

/** The fixture's Deployment pod (orders), injected. */
const ordersPod = async (): Promise<Json> => structuredClone((await injectedPods())[0]!.pod);

/** The messages of the validations a pod fails, evaluated in order as admission does. */
function denials(policy: Policy, pod: Json): string[] {
  const object = structuredClone(pod);
  const variables: Record<string, unknown> = {};
  for (const v of policy.variables) variables[v.name] = parse(v.expression)({ object, variables });
  return policy.validations.filter((v) => parse(v.expression)({ object, variables }) !== true).map((v) => v.message);
}

type Container = Json & { name: string; env?: Array<{ name: string; value?: string }> };
const containersOf = (pod: Json): { containers: Container[]; initContainers: Container[] } => pod.spec as never;
const proxyOf = (pod: Json): Container => containersOf(pod).initContainers.find((c) => c.name === 'auditmesh-proxy')!;
const initOf = (pod: Json): Container => containersOf(pod).initContainers.find((c) => c.name === 'auditmesh-init')!;
const annotate = (pod: Json, key: string, value: string): void => {
  const metadata = pod.metadata as { annotations?: Record<string, string> };
  metadata.annotations = { ...metadata.annotations, [key]: value };
};

test('a pod as the injector renders it is admitted; the same pod without the sidecar is refused', async (t) => {
  const policy = await renderedPolicy();
  const pods = await injectedPods();
  t.deepEqual(pods.map((p) => p.kind), ['Deployment', 'StatefulSet', 'Job']);
  t.true(pods.every(({ pod }) => JSON.stringify(pod).includes('AUDITMESH_CA_FILE')), 'the pods carry the mesh CA bundle');
  for (const { kind, pod } of pods) t.deepEqual(denials(policy, pod), [], `${kind} as injected`);
  const plain = await ordersPod();
  const spec = plain.spec as { initContainers: Container[] };
  spec.initContainers = spec.initContainers.filter((c) => !c.name.startsWith('auditmesh-'));
  t.is(denials(policy, plain).length, 1);
  t.regex(denials(policy, plain)[0]!, /requires the auditmesh sidecar/);
  // A mirror pod (static, from the kubelet) cannot be mutated, so it is let through.
  annotate(plain, 'kubernetes.io/config.mirror', 'x');
  t.deepEqual(denials(policy, plain), []);
});

const bypasses: Array<[string, (pod: Json) => void, RegExp]> = [
  ['a container merely named auditmesh-proxy (another image)', (p) => { proxyOf(p).image = 'busybox'; }, /auditmesh-proxy must be the injected sidecar/],
  ['the proxy given other args', (p) => { proxyOf(p).args = ['sidecar', '--audit-mode', 'off']; }, /auditmesh-proxy must be the injected sidecar/],
  ['the proxy with AUDITMESH_AUDIT_MODE=off in its env', (p) => { proxyOf(p).env = [...(proxyOf(p).env ?? []), { name: 'AUDITMESH_AUDIT_MODE', value: 'off' }]; }, /auditmesh-proxy must be the injected sidecar/],
  ['the proxy with envFrom', (p) => { proxyOf(p).envFrom = [{ configMapRef: { name: 'x' } }]; }, /auditmesh-proxy must be the injected sidecar/],
  ['the init container running another command', (p) => { initOf(p).command = ['/bin/true']; }, /auditmesh-init must be the injected one/],
  ['the init container excluding all outbound traffic', (p) => { initOf(p).env = [...(initOf(p).env ?? []).filter((e) => e.name !== 'AUDITMESH_EXCLUDE_OUTBOUND_CIDRS'), { name: 'AUDITMESH_EXCLUDE_OUTBOUND_CIDRS', value: '0.0.0.0/0' }]; }, /no exclusion of all outbound traffic/],
  ['audit-mode: off', (p) => annotate(p, 'auditmesh.io/audit-mode', 'off'), /audit-mode: off is not allowed/],
  ['exclude-inbound-ports: *', (p) => annotate(p, 'auditmesh.io/exclude-inbound-ports', ' * '), /exclude-inbound-ports: \* is not allowed/],
  ['exclude-outbound-cidrs wider than /8', (p) => annotate(p, 'auditmesh.io/exclude-outbound-cidrs', '10.96.0.0/12, 0.0.0.0/0'), /ranges wider than \/8/],
  ['an app container as the proxy uid', (p) => { containersOf(p).containers[0]!.securityContext = { runAsUser: 1337 }; }, /no container but auditmesh-proxy may run as the proxy's uid/],
  ['the pod as the proxy uid, the app not overriding it', (p) => { (p.spec as Json).securityContext = { runAsUser: 1337 }; }, /no container but auditmesh-proxy may run as the proxy's uid/],
];

for (const [what, change, message] of bypasses) {
  test(`an injected pod with ${what} is refused, naming why`, async (t) => {
    const policy = await renderedPolicy();
    const pod = await ordersPod();
    change(pod);
    const denied = denials(policy, pod);
    t.is(denied.length, 1, denied.join(' | '));
    t.regex(denied[0] ?? '', message);
  });
}

test('ordinary narrow exclusions and audit modes stay allowed', async (t) => {
  const policy = await renderedPolicy();
  const pod = await ordersPod();
  annotate(pod, 'auditmesh.io/exclude-outbound-cidrs', '10.96.0.0/12,169.254.169.254/32');
  annotate(pod, 'auditmesh.io/audit-mode', 'strict');
  annotate(pod, 'auditmesh.io/exclude-inbound-ports', '9090');
  containersOf(pod).containers[0]!.securityContext = { runAsUser: 1000 };
  t.deepEqual(denials(policy, pod), []);
});

test('a proxy with AUDITMESH_INBOUND_POLICY (auditmesh.io/inbound-policy, as the injector renders it) stays allowed', async (t) => {
  const policy = await renderedPolicy();
  const pod = await ordersPod();
  annotate(pod, 'auditmesh.io/inbound-policy', 'verified');
  proxyOf(pod).env = [...(proxyOf(pod).env ?? []), { name: 'AUDITMESH_INBOUND_POLICY', value: 'verified' }];
  t.deepEqual(denials(policy, pod), []);
});
