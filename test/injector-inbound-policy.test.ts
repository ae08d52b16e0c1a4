import test from 'ava';
import { readFileSync } from 'node:fs';
import { inject } from '../control/injector/inject.js';
import { applyPatch } from '../control/injector/json-patch.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../control/injector/inject-flags.js';
import { parseFlags } from '../command/flags.js';
import type { Container, NamespaceInfo, Pod } from '../control/injector/pod.js';
import { parseSidecarConfig } from '../proxy/config.js';

const OPTIONS = injectOptionsFromFlags(parseFlags(INJECT_FLAGS, [], {}).values);
const ENABLED: NamespaceInfo = { name: 'shop', labels: { 'auditmesh.io/inject': 'enabled', 'kubernetes.io/metadata.name': 'shop' } };

function podAnnotated(annotations: Record<string, string>): Pod {
  const review = JSON.parse(readFileSync(new URL('./fixtures/admission/deployment-pod.json', import.meta.url), 'utf8')) as { request: { object: Pod } };
  const pod = review.request.object;
  pod.metadata = { ...pod.metadata, annotations: { ...pod.metadata?.annotations, ...annotations } };
  return pod;
}

const envOf = (c: Container | undefined): Record<string, string> => Object.fromEntries(((c?.env ?? []) as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]));

for (const policy of ['permissive', 'verified', 'mesh-verified'] as const) {
  test(`auditmesh.io/inbound-policy: ${policy} becomes AUDITMESH_INBOUND_POLICY, which the sidecar reads as its --inbound-policy`, (t) => {
    const pod = podAnnotated({ 'auditmesh.io/inbound-policy': ` ${policy} ` });
    const result = inject(pod, ENABLED, OPTIONS);
    t.true(result.injected, result.warnings.join('\n'));
    const proxy = applyPatch(pod, result.patch).spec.initContainers!.find((c) => c.name === 'auditmesh-proxy');
    const env = envOf(proxy);
    t.is(env.AUDITMESH_INBOUND_POLICY, policy);
    t.is(parseSidecarConfig((proxy!.args as string[]).slice(1), env).inboundPolicy, policy);
  });
}

test('a pod without the annotation gets no AUDITMESH_INBOUND_POLICY: the sidecar is permissive', (t) => {
  const pod = podAnnotated({});
  const result = inject(pod, ENABLED, OPTIONS);
  t.true(result.injected);
  const proxy = applyPatch(pod, result.patch).spec.initContainers!.find((c) => c.name === 'auditmesh-proxy');
  const env = envOf(proxy);
  t.false('AUDITMESH_INBOUND_POLICY' in env);
  t.is(parseSidecarConfig((proxy!.args as string[]).slice(1), env).inboundPolicy, 'permissive');
});

for (const bad of ['strict', 'Verified', 'verified,mesh-verified']) {
  test(`a bad auditmesh.io/inbound-policy (${bad}) leaves the pod uninjected, with a warning naming the annotation and its values`, (t) => {
    const result = inject(podAnnotated({ 'auditmesh.io/inbound-policy': bad }), ENABLED, OPTIONS);
    t.false(result.injected);
    t.is(result.reason, 'invalid-annotations');
    t.regex(result.warnings.join('\n'), /auditmesh\.io\/inbound-policy: expected permissive, verified or mesh-verified, got/);
  });
}
