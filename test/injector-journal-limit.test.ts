import test from 'ava';
import { readFileSync } from 'node:fs';
import { inject } from '../control/injector/inject.js';
import { applyPatch } from '../control/injector/json-patch.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../control/injector/inject-flags.js';
import { quantityBytes } from '../control/injector/journal-limit.js';
import type { Container, NamespaceInfo, Pod } from '../control/injector/pod.js';
import { parseFlags } from '../command/flags.js';
import { parseSidecarConfig } from '../proxy/config.js';

// The injected sidecar's journal bound follows its volume (issue 22, item 4): at most 80% of the
// emptyDir's sizeLimit, so the bound applies before the kubelet evicts the pod at the sizeLimit.

const OPTIONS = injectOptionsFromFlags(parseFlags(INJECT_FLAGS, [], {}).values);
const ENABLED: NamespaceInfo = { name: 'shop', labels: { 'auditmesh.io/inject': 'enabled', 'kubernetes.io/metadata.name': 'shop' } };

function pod(annotations: Record<string, string> = {}): Pod {
  const review = JSON.parse(readFileSync(new URL('./fixtures/admission/deployment-pod.json', import.meta.url), 'utf8')) as { request: { object: Pod } };
  const p = review.request.object;
  p.metadata = { ...p.metadata, annotations: { ...p.metadata?.annotations, ...annotations } };
  return p;
}

/** The injected pod's journal volume sizeLimit and the proxy's env. */
function rendered(p: Pod, options = OPTIONS): { sizeLimit: string; env: Record<string, string> } {
  const result = inject(p, ENABLED, options);
  if (!result.injected) throw new Error(`not injected: ${result.reason} ${result.warnings.join('; ')}`);
  const patched = applyPatch(p, result.patch);
  const proxy = [...(patched.spec.initContainers ?? []), ...patched.spec.containers].find((c: Container) => c.name === 'auditmesh-proxy')!;
  const volume = patched.spec.volumes!.find((v) => v.name === 'auditmesh-data') as unknown as { emptyDir: { sizeLimit: string } };
  return { sizeLimit: volume.emptyDir.sizeLimit, env: Object.fromEntries((proxy.env as Array<{ name: string; value: string }>).map((e) => [e.name, e.value])) };
}

// [quantity, its bytes, the journal bound]
const SIZES: Array<[string, number, number]> = [
  ['1Gi', 1073741824, 858993459],
  ['500Mi', 524288000, 419430400],
  ['2G', 2000000000, 1600000000],
  ['1.5Gi', 1610612736, 1288490188],
  ['16Mi', 16777216, 13421772],
  ['1e9', 1000000000, 800000000],
  ['100M', 100000000, 80000000],
  ['20000k', 20000000, 16000000],
  ['4Ti', 4398046511104, 3518437208883],
];

for (const [quantity, bytes, limit] of SIZES) {
  test(`auditmesh.io/journal-size-limit ${quantity}: the volume is ${quantity} and the sidecar's bound ${limit} bytes (80%)`, (t) => {
    t.is(quantityBytes(quantity), bytes);
    const { sizeLimit, env } = rendered(pod({ 'auditmesh.io/journal-size-limit': quantity }));
    t.is(sizeLimit, quantity);
    t.is(env.AUDITMESH_JOURNAL_LIMIT_BYTES, String(limit));
    t.true(limit <= bytes * 0.8);
    // The sidecar reads the rendered env as its bound.
    t.is(parseSidecarConfig([], env).journalLimitBytes, limit);
  });
}

test('without the annotation the bound is 80% of the injector\'s --journal-size-limit (1Gi by default)', (t) => {
  t.is(rendered(pod()).env.AUDITMESH_JOURNAL_LIMIT_BYTES, '858993459');
  const options = injectOptionsFromFlags(parseFlags(INJECT_FLAGS, ['--journal-size-limit', '256Mi'], {}).values);
  t.deepEqual(rendered(pod(), options).sizeLimit, '256Mi');
  t.is(rendered(pod(), options).env.AUDITMESH_JOURNAL_LIMIT_BYTES, String(Math.floor(256 * 1024 * 1024 * 0.8)));
});

for (const bad of ['1Mi', '500m', '0', 'lots', '-1Gi', '1Gb']) {
  test(`journal-size-limit ${JSON.stringify(bad)} is refused: the pod is left uninjected and the flag is refused at boot`, (t) => {
    const result = inject(pod({ 'auditmesh.io/journal-size-limit': bad }), ENABLED, OPTIONS);
    t.is(result.reason, 'invalid-annotations');
    t.regex(result.warnings.join('\n'), /auditmesh\.io\/journal-size-limit: expected a quantity of at least 16Mi such as 1Gi/);
    t.throws(() => injectOptionsFromFlags(parseFlags(INJECT_FLAGS, [`--journal-size-limit=${bad}`], {}).values), { message: /--journal-size-limit: expected a quantity of at least 16Mi/ });
  });
}
