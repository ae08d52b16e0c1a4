import test from 'ava';
import { readFileSync } from 'node:fs';
import { inject, STATUS_ANNOTATION, type InjectResult } from '../control/injector/inject.js';
import { applyPatch } from '../control/injector/json-patch.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../control/injector/inject-flags.js';
import { parseFlags } from '../command/flags.js';
import type { Container, NamespaceInfo, Pod } from '../control/injector/pod.js';
import type { InjectOptions } from '../control/injector/sidecar-containers.js';
import { schemaErrors } from './helpers/kube-schema.js';

const IDENTITY_VOLUME = { name: 'auditmesh-identity', projected: { sources: [{ serviceAccountToken: { audience: 'auditmesh', expirationSeconds: 3600, path: 'token' } }] } };
const OPTIONS = injectOptionsFromFlags(parseFlags(INJECT_FLAGS, [], {}).values);
const ENABLED: NamespaceInfo = { name: 'shop', labels: { 'auditmesh.io/inject': 'enabled', 'kubernetes.io/metadata.name': 'shop' } };
const PLAIN: NamespaceInfo = { name: 'staging', labels: { 'kubernetes.io/metadata.name': 'staging' } };

function fixture(name: string): Pod {
  const review = JSON.parse(readFileSync(new URL(`./fixtures/admission/${name}.json`, import.meta.url), 'utf8')) as { request: { object: Pod } };
  return review.request.object;
}

const names = (cs: readonly Container[] | undefined): string[] => (cs ?? []).map((c) => c.name);
const envOf = (c: Container | undefined): Record<string, string> => Object.fromEntries(((c?.env ?? []) as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]));

/** Pod Security Standards "restricted" (v1.30), the checks that apply to one container. */
function restrictedViolations(c: Container, pod: Pod): string[] {
  type Sc = { runAsNonRoot?: boolean; runAsUser?: number; allowPrivilegeEscalation?: boolean; privileged?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[]; add?: string[] }; seccompProfile?: { type: string } };
  const sc = (c.securityContext ?? {}) as Sc;
  const podSc = (pod.spec.securityContext ?? {}) as Sc;
  const v: string[] = [];
  if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) v.push('runAsNonRoot');
  if ((sc.runAsUser ?? podSc.runAsUser) === 0) v.push('runAsUser 0');
  if (sc.allowPrivilegeEscalation !== false) v.push('allowPrivilegeEscalation');
  if (sc.privileged === true) v.push('privileged');
  if (!(sc.capabilities?.drop ?? []).includes('ALL')) v.push('capabilities.drop ALL');
  if ((sc.capabilities?.add ?? []).some((cap) => cap !== 'NET_BIND_SERVICE')) v.push('capabilities.add');
  if (!['RuntimeDefault', 'Localhost'].includes((sc.seccompProfile ?? podSc.seccompProfile)?.type ?? '')) v.push('seccompProfile');
  if ((c.ports ?? []).some((p) => p.hostPort !== undefined)) v.push('hostPort');
  if (sc.readOnlyRootFilesystem !== true) v.push('readOnlyRootFilesystem (asked for beyond restricted)');
  return v;
}

interface Case {
  fixture: string;
  namespace?: NamespaceInfo;
  options?: Partial<InjectOptions>;
  reason: InjectResult['reason'];
  init?: string[];
  containers?: string[];
  warning?: RegExp;
  check?: (t: import('ava').ExecutionContext, pod: Pod) => void;
}

const CASES: Case[] = [
  {
    fixture: 'deployment-pod',
    reason: 'injected',
    init: ['auditmesh-init', 'auditmesh-proxy'],
    containers: ['orders'],
    check(t, pod) {
      // A Deployment's pod has no name yet: identity comes from its app label.
      t.is(envOf(pod.spec.initContainers![1]).AUDITMESH_SERVICE, 'orders');
      t.is(envOf(pod.spec.initContainers![1]).AUDITMESH_APP_PORT, '8080');
      t.is(pod.metadata!.labels!['auditmesh.io/sidecar'], 'true');
      t.is(pod.metadata!.labels!['pod-template-hash'], '7d9f8b6c5d');
    },
  },
  { fixture: 'init-containers-pod', reason: 'injected', init: ['auditmesh-init', 'auditmesh-proxy', 'wait-for-db', 'migrate'], containers: ['api'], check: (t, pod) => t.deepEqual(pod.spec.volumes!.map((v) => v.name), ['cache', 'auditmesh-data', 'auditmesh-identity']) },
  {
    fixture: 'init-containers-pod',
    options: { sidecarMode: 'container' },
    reason: 'injected',
    // Regular-container mode: earlier init containers run before any proxy exists, so the capture rules come last.
    init: ['wait-for-db', 'migrate', 'auditmesh-init'],
    containers: ['auditmesh-proxy', 'api'],
    check: (t, pod) => t.is(pod.spec.containers[0]!.restartPolicy, undefined),
  },
  {
    fixture: 'job-pod',
    reason: 'injected',
    init: ['auditmesh-init', 'auditmesh-proxy'],
    containers: ['report'],
    warning: /declares no TCP container port/,
    check(t, pod) {
      // A native sidecar ends with the Job; no port means no inbound capture.
      t.is(pod.spec.initContainers![1]!.restartPolicy, 'Always');
      t.is(envOf(pod.spec.initContainers![0]).AUDITMESH_EXCLUDE_INBOUND_PORTS, '*');
    },
  },
  { fixture: 'job-pod', options: { sidecarMode: 'container' }, reason: 'injected', warning: /Job pod .* never completes/ },
  { fixture: 'host-network-pod', reason: 'host-network' },
  { fixture: 'mirror-pod', reason: 'mirror-pod' },
  { fixture: 'opted-out-pod', reason: 'opted-out' },
  { fixture: 'opted-in-pod', namespace: PLAIN, reason: 'injected', init: ['auditmesh-init', 'auditmesh-proxy'] },
  { fixture: 'deployment-pod', namespace: PLAIN, reason: 'not-enabled' },
  { fixture: 'already-injected-pod', reason: 'already-injected' },
  { fixture: 'invalid-annotations-pod', reason: 'invalid-annotations', warning: /exclude-outbound-ports: expected comma-separated ports, got "postgres"/ },
  {
    fixture: 'annotated-pod',
    reason: 'injected',
    warning: /sets its own prometheus.io\/scrape/,
    check(t, pod) {
      // The app's own scrape annotations are kept: they can name one port only.
      t.like(pod.metadata!.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' });
      t.false('prometheus.io/path' in pod.metadata!.annotations!);
      const [init, proxy] = pod.spec.initContainers!;
      t.like(envOf(init), { AUDITMESH_EXCLUDE_INBOUND_PORTS: '9090', AUDITMESH_EXCLUDE_OUTBOUND_PORTS: '5432,6379', AUDITMESH_EXCLUDE_OUTBOUND_CIDRS: '10.96.0.0/12,fd00::/8' });
      t.like(envOf(proxy), { AUDITMESH_AUDIT_MODE: 'strict', AUDITMESH_APP_PORT: '8443' });
      // The V8 settings the memory defaults were measured with are in the pod, where its owner sees them.
      t.deepEqual(proxy!.command, ['node', '--max-semi-space-size=2', '--heap-growing-percent=20', '/opt/auditmesh/bin/auditmesh.js']);
      t.deepEqual(proxy!.args, ['sidecar']);
      t.deepEqual(proxy!.resources, { requests: { cpu: '200m', memory: '80Mi' }, limits: { memory: '512Mi' } });
      t.deepEqual(pod.spec.volumes, [{ name: 'auditmesh-data', emptyDir: { sizeLimit: '4Gi' } }, IDENTITY_VOLUME]);
      // The proxy's credential: the kubelet's token for this pod, audience auditmesh, and the id it binds.
      t.deepEqual((proxy!.volumeMounts as Array<{ name: string }>).find((m) => m.name === 'auditmesh-identity'), { name: 'auditmesh-identity', mountPath: '/var/run/secrets/auditmesh.io/identity', readOnly: true });
      t.like(envOf(proxy), { AUDITMESH_IDENTITY_TOKEN_FILE: '/var/run/secrets/auditmesh.io/identity/token', AUDITMESH_SIDECAR_ID: '$(POD_NAMESPACE)/$(POD_NAME)' });
      const env = proxy!.env as Array<{ name: string; valueFrom?: unknown }>;
      t.true(env.findIndex((e) => e.name === 'POD_NAMESPACE') < env.findIndex((e) => e.name === 'AUDITMESH_SIDECAR_ID'), 'defined before the reference that expands it');
      t.deepEqual(env.find((e) => e.name === 'POD_NAME')!.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
      // The pod IP the sidecar claims for the mesh directory comes from the kubelet, not from the pod's author.
      t.deepEqual(env.find((e) => e.name === 'AUDITMESH_POD_IP'), { name: 'AUDITMESH_POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
    },
  },
];

for (const c of CASES) {
  const mode = c.options?.sidecarMode ?? 'native';
  test(`policy: ${c.fixture} in ${c.namespace === PLAIN ? 'a plain' : 'an enabled'} namespace (${mode}) → ${c.reason}`, (t) => {
    const pod = fixture(c.fixture);
    const result = inject(pod, c.namespace ?? ENABLED, { ...OPTIONS, ...c.options });
    t.is(result.reason, c.reason);
    t.is(result.injected, c.reason === 'injected');
    if (c.warning !== undefined) t.regex(result.warnings.join('\n'), c.warning);
    if (!result.injected) {
      t.deepEqual(result.patch, []);
      return;
    }
    const patched = applyPatch(pod, result.patch);
    t.is(schemaErrors(patched), null);
    if (c.init !== undefined) t.deepEqual(names(patched.spec.initContainers), c.init);
    if (c.containers !== undefined) t.deepEqual(names(patched.spec.containers), c.containers);
    const all = [...(patched.spec.initContainers ?? []), ...patched.spec.containers];
    const proxy = all.find((x) => x.name === 'auditmesh-proxy')!;
    const init = all.find((x) => x.name === 'auditmesh-init')!;
    t.deepEqual(restrictedViolations(proxy, patched), []);
    t.deepEqual(init.securityContext!.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    t.is(JSON.parse(patched.metadata!.annotations![STATUS_ANNOTATION]!).mode, mode);
    if (pod.metadata?.annotations?.['prometheus.io/scrape'] === undefined) {
      t.like(patched.metadata!.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(OPTIONS.adminPort), 'prometheus.io/path': '/metrics' });
    }
    // Injecting the injected pod again changes nothing.
    t.is(inject(patched, c.namespace ?? ENABLED, { ...OPTIONS, ...c.options }).reason, 'already-injected');
    c.check?.(t, patched);
  });
}

test('policy: the same input always gives the same patch, and the input is not modified', (t) => {
  const pod = fixture('init-containers-pod');
  const before = structuredClone(pod);
  t.deepEqual(inject(pod, ENABLED, OPTIONS), inject(pod, ENABLED, OPTIONS));
  t.deepEqual(pod, before);
});

test('policy: an app running as the proxy uid is injected with a warning that it bypasses the audit', (t) => {
  const pod = fixture('deployment-pod');
  pod.spec.securityContext = { runAsUser: 1337 };
  t.regex(inject(pod, ENABLED, OPTIONS).warnings.join('\n'), /runs as uid 1337.*bypasses the audit/);
});
