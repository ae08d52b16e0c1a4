import test from 'ava';
import { runInProcess } from './helpers/child.js';
import { schemaErrors } from './helpers/kube-schema.js';

// The mandatory-audit ValidatingAdmissionPolicy (issue 22, item 10) checks the injected sidecar
// itself, not only a container's name: its image, args and the init container's command, as the
// injector renders them, and refuses the annotations that switch the audit off or exclude all
// traffic. The rendered expressions are checked exactly here; test/install-mandatory-policy-cel.test.ts
// evaluates them against injected pods and each bypass.

type Obj = { kind: string; metadata: { name: string }; spec: Record<string, unknown> };
interface Policy {
  variables: Array<{ name: string; expression: string }>;
  validations: Array<{ expression: string; message: string; reason: string }>;
}

async function policy(args: string[] = []): Promise<{ spec: Policy; objects: Obj[] }> {
  const r = await runInProcess(['install', '-o', 'json', '--certs', 'self-signed', '--mandatory-audit-policy', ...args]);
  if (r.code !== 0) throw new Error(r.stderr);
  const objects = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Obj);
  const vap = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy');
  if (vap === undefined) throw new Error('no ValidatingAdmissionPolicy rendered');
  return { spec: vap.spec as unknown as Policy, objects };
}

/** Parentheses, brackets and braces balance outside string literals, and every literal closes. */
function balanced(expr: string): boolean {
  const stack: string[] = [];
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  for (let i = 0; i < expr.length; i++) {
    const ch = expr[i];
    if (ch === "'") {
      for (i++; i < expr.length && expr[i] !== "'"; i++) if (expr[i] === '\\') i++;
      if (i >= expr.length) return false;
    } else if ('([{'.includes(ch)) stack.push(ch);
    else if (ch in pairs && stack.pop() !== pairs[ch]) return false;
  }
  return stack.length === 0;
}

const PROXIES = `object.spec.containers.filter(c, c.name == 'auditmesh-proxy') + (has(object.spec.initContainers) ? object.spec.initContainers : []).filter(c, c.name == 'auditmesh-proxy')`;
const WIDE = (v: string): string => `${v}.split(',').exists(x, x.trim().split('/').size() == 2 && x.trim().split('/')[1].matches('^[0-9]{1,3}$') && int(x.trim().split('/')[1]) < 8)`;

test('the policy renders valid objects whose every expression is well formed and lets mirror pods through', async (t) => {
  const { spec, objects } = await policy();
  for (const o of objects.filter((x) => x.kind.startsWith('ValidatingAdmissionPolicy'))) t.is(schemaErrors(o), null, o.kind);
  t.deepEqual(spec.variables.map((v) => v.name), ['proxies', 'inits', 'annotations', 'mirror']);
  t.is(spec.variables[0].expression, PROXIES);
  for (const e of [...spec.variables.map((v) => v.expression), ...spec.validations.map((v) => v.expression)]) t.true(balanced(e), e);
  for (const v of spec.validations) {
    t.true(v.expression.startsWith('variables.mirror || ('), v.expression);
    t.is(v.reason, 'Forbidden');
  }
  t.is(spec.validations[0].expression, 'variables.mirror || (variables.proxies.size() == 1 && variables.inits.size() == 1)');
});

test('the injected containers are checked by image, args and command, and audit-mode off in their env is refused', async (t) => {
  const { spec } = await policy();
  t.is(
    spec.validations[1].expression,
    "variables.mirror || (variables.proxies.all(c, c.image == 'auditmesh/auditmesh:0.1.0' && has(c.command) && c.command == ['node', '--max-semi-space-size=2', '--heap-growing-percent=20', '/opt/auditmesh/bin/auditmesh.js'] && has(c.args) && c.args == ['sidecar'] && !has(c.envFrom) && (!has(c.env) || c.env.all(e, e.name != 'AUDITMESH_AUDIT_MODE' || (has(e.value) && e.value != 'off')))))",
  );
  t.is(
    spec.validations[2].expression,
    `variables.mirror || (variables.inits.all(c, c.image == 'auditmesh/auditmesh:0.1.0' && has(c.command) && c.command == ['/bin/sh', '/opt/auditmesh/deploy/init/iptables.sh'] && !has(c.args) && !has(c.envFrom) && (!has(c.env) || c.env.all(e, e.name != 'AUDITMESH_EXCLUDE_OUTBOUND_CIDRS' || (has(e.value) && !(${WIDE('e.value')}))))))`,
  );
  t.regex(spec.validations[1].message, /auditmesh-proxy must be the injected sidecar: image auditmesh\/auditmesh:0\.1\.0, command \["node",.*"\/opt\/auditmesh\/bin\/auditmesh\.js"\], args \["sidecar"\]/);
});

test("no app container may run as the proxy's uid (its own or the pod's), which the capture exempts", async (t) => {
  const { spec } = await policy(['--proxy-uid', '2001']);
  t.is(
    spec.validations[3].expression,
    "variables.mirror || ((object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : [])).all(c, c.name in ['auditmesh-proxy', 'auditmesh-init'] || (has(c.securityContext) && has(c.securityContext.runAsUser) ? c.securityContext.runAsUser != 2001 : !(has(object.spec.securityContext) && has(object.spec.securityContext.runAsUser) && object.spec.securityContext.runAsUser == 2001))))",
  );
  t.regex(spec.validations[3].message, /uid 2001: its traffic would bypass the capture/);
});

test('the image checked is the one the injector injects (--image)', async (t) => {
  const image = 'registry.example/auditmesh@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
  const { spec } = await policy(['--image', image]);
  t.true(spec.validations[1].expression.includes(`c.image == '${image}'`));
  t.true(spec.validations[2].expression.includes(`c.image == '${image}'`));
  t.false(JSON.stringify(spec).includes('auditmesh/auditmesh:0.1.0'));
});

test('the bypass annotations are refused: audit-mode off, exclude-inbound-ports *, exclude-outbound-cidrs wider than /8', async (t) => {
  const { spec } = await policy();
  const exprs = spec.validations.slice(4).map((v) => v.expression);
  t.deepEqual(exprs, [
    "variables.mirror || (!('auditmesh.io/audit-mode' in variables.annotations && variables.annotations['auditmesh.io/audit-mode'].trim() == 'off'))",
    "variables.mirror || (!('auditmesh.io/exclude-inbound-ports' in variables.annotations && variables.annotations['auditmesh.io/exclude-inbound-ports'].trim() == '*'))",
    `variables.mirror || (!('auditmesh.io/exclude-outbound-cidrs' in variables.annotations && ${WIDE("variables.annotations['auditmesh.io/exclude-outbound-cidrs']")}))`,
  ]);
  t.deepEqual(
    spec.validations.slice(4).map((v) => v.message),
    [
      'auditmesh.io/audit-mode: off is not allowed where auditing is mandatory',
      'auditmesh.io/exclude-inbound-ports: * is not allowed where auditing is mandatory',
      'auditmesh.io/exclude-outbound-cidrs: ranges wider than /8 (0.0.0.0/0, ::/0) are not allowed where auditing is mandatory',
    ],
  );
});
