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

test('auditmesh.io/secret-paths becomes AUDITMESH_SECRET_PATHS on the proxy, which the sidecar reads as its --secret-paths', (t) => {
  const pod = podAnnotated({ 'auditmesh.io/secret-paths': ' /hooks/{secret}, /users/*/reset/{secret} ' });
  const result = inject(pod, ENABLED, OPTIONS);
  t.true(result.injected, result.warnings.join('\n'));
  const proxy = applyPatch(pod, result.patch).spec.initContainers!.find((c) => c.name === 'auditmesh-proxy');
  const env = envOf(proxy);
  t.is(env.AUDITMESH_SECRET_PATHS, '/hooks/{secret},/users/*/reset/{secret}');
  // What the proxy container gets, as the sidecar parses it at boot.
  const config = parseSidecarConfig((proxy!.args as string[]).slice(1), env);
  t.deepEqual(config.secretPaths, ['/hooks/{secret}', '/users/*/reset/{secret}']);
});

test('a pod without the annotation gets no AUDITMESH_SECRET_PATHS', (t) => {
  const pod = podAnnotated({});
  const result = inject(pod, ENABLED, OPTIONS);
  const proxy = applyPatch(pod, result.patch).spec.initContainers!.find((c) => c.name === 'auditmesh-proxy');
  t.true(result.injected);
  t.false('AUDITMESH_SECRET_PATHS' in envOf(proxy));
});

for (const bad of ['hooks/{secret}', '/hooks/*', '/hooks/{token}', '/hooks/{secret},users']) {
  test(`a malformed auditmesh.io/secret-paths (${bad}) leaves the pod uninjected, with a warning naming the annotation`, (t) => {
    const result = inject(podAnnotated({ 'auditmesh.io/secret-paths': bad }), ENABLED, OPTIONS);
    t.false(result.injected);
    t.is(result.reason, 'invalid-annotations');
    t.regex(result.warnings.join('\n'), /auditmesh\.io\/secret-paths: expected comma-separated path templates/);
  });
}
