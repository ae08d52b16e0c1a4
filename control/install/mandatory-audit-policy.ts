import { INJECT_LABEL } from '../injector/inject.js';
import { ANNOTATIONS, podSettings } from '../injector/pod-settings.js';
import { INIT_CONTAINER, initContainer, PROXY_CONTAINER, proxyContainer } from '../injector/sidecar-containers.js';
import { componentLabels, INJECTOR, type InstallOptions, type KubeObject } from './install-options.js';

/** Namespace label that makes the sidecar mandatory (with --mandatory-audit-policy). */
export const MANDATORY_AUDIT_LABEL = 'auditmesh.io/audit';
export const MANDATORY_AUDIT_POLICY = 'auditmesh-sidecar-required';
/** An exclude-outbound-cidrs entry shorter than this prefix excludes a large share of all addresses (0.0.0.0/0, or 0.0.0.0/1 with 128.0.0.0/1). */
const MIN_EXCLUDED_PREFIX = 8;

/** A CEL string literal. */
const str = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
const list = (items: readonly string[]): string => `[${items.map(str).join(', ')}]`;

/** What the injector renders for every pod: the image, the proxy's command and args, and the init container's command. */
function injected(o: InstallOptions): { image: string; proxyCommand: string[] | undefined; proxyArgs: string[]; initCommand: string[] } {
  const parsed = podSettings({ metadata: {}, spec: { containers: [] } }, o.inject);
  if (!('settings' in parsed)) throw new Error(`the injector's defaults do not parse: ${parsed.errors.join('; ')}`);
  const proxy = proxyContainer(o.inject, parsed.settings, undefined);
  const init = initContainer(o.inject, parsed.settings);
  return { image: o.inject.image, proxyCommand: proxy.command as string[] | undefined, proxyArgs: proxy.args as string[], initCommand: init.command as string[] };
}

/** The pod's init containers, none when absent. */
const INITS = `(has(object.spec.initContainers) ? object.spec.initContainers : [])`;

/** The CEL variables: the pod's proxies and init containers by name, its annotations, whether it is a mirror pod. */
function variables(): Array<{ name: string; expression: string }> {
  const inits = INITS;
  return [
    { name: 'proxies', expression: `object.spec.containers.filter(c, c.name == ${str(PROXY_CONTAINER)}) + ${inits}.filter(c, c.name == ${str(PROXY_CONTAINER)})` },
    { name: 'inits', expression: `${inits}.filter(c, c.name == ${str(INIT_CONTAINER)})` },
    { name: 'annotations', expression: `has(object.metadata.annotations) ? object.metadata.annotations : {}` },
    { name: 'mirror', expression: `'kubernetes.io/config.mirror' in variables.annotations` },
  ];
}

/** `c` has no env var `name`, or one whose literal value passes `ok` (a value from elsewhere could be anything). */
const envPasses = (name: string, ok: string): string => `!has(c.env) || c.env.all(e, e.name != ${str(name)} || (has(e.value) && ${ok}))`;
/** A comma-separated CIDR list `v` holds an entry with a prefix shorter than MIN_EXCLUDED_PREFIX. */
const wideCidr = (v: string): string => `${v}.split(',').exists(x, x.trim().split('/').size() == 2 && x.trim().split('/')[1].matches('^[0-9]{1,3}$') && int(x.trim().split('/')[1]) < ${MIN_EXCLUDED_PREFIX})`;
const annotation = (key: string): string => `variables.annotations[${str(key)}]`;
const annotated = (key: string, test: string): string => `${str(key)} in variables.annotations && ${test}`;

/** The validations, each a rule that names what it refuses. Every one lets mirror pods through: the kubelet makes them and cannot inject them. */
function validations(o: InstallOptions): Array<{ expression: string; message: string; reason: string }> {
  const { image, proxyCommand, proxyArgs, initCommand } = injected(o);
  // The proxy's command (the entrypoint with its V8 settings) is checked as rendered, so no other program can stand in.
  const command = proxyCommand === undefined ? '!has(c.command)' : `has(c.command) && c.command == ${list(proxyCommand)}`;
  const commandText = proxyCommand === undefined ? 'no command' : `command ${JSON.stringify(proxyCommand)}`;
  const uid = o.inject.proxyUid;
  const rule = (expression: string, message: string): { expression: string; message: string; reason: string } => ({ expression: `variables.mirror || (${expression})`, message, reason: 'Forbidden' });
  return [
    rule(
      `variables.proxies.size() == 1 && variables.inits.size() == 1`,
      `this namespace requires the auditmesh sidecar (${MANDATORY_AUDIT_LABEL}=mandatory) and the pod has none: label the namespace ${INJECT_LABEL}=enabled, do not set ${INJECT_LABEL}=false on the pod, and check that the injector is running`,
    ),
    rule(
      `variables.proxies.all(c, c.image == ${str(image)} && ${command} && has(c.args) && c.args == ${list(proxyArgs)} && !has(c.envFrom) && (${envPasses('AUDITMESH_AUDIT_MODE', "e.value != 'off'")}))`,
      `${PROXY_CONTAINER} must be the injected sidecar: image ${image}, ${commandText}, args ${JSON.stringify(proxyArgs)}, no envFrom, and auditing on`,
    ),
    rule(
      `variables.inits.all(c, c.image == ${str(image)} && has(c.command) && c.command == ${list(initCommand)} && !has(c.args) && !has(c.envFrom) && (${envPasses('AUDITMESH_EXCLUDE_OUTBOUND_CIDRS', `!(${wideCidr('e.value')})`)}))`,
      `${INIT_CONTAINER} must be the injected one: image ${image}, command ${JSON.stringify(initCommand)}, no args or envFrom, and no exclusion of all outbound traffic`,
    ),
    rule(
      `(object.spec.containers + ${INITS}).all(c, c.name in ${list([PROXY_CONTAINER, INIT_CONTAINER])} || (has(c.securityContext) && has(c.securityContext.runAsUser) ? c.securityContext.runAsUser != ${uid} : !(has(object.spec.securityContext) && has(object.spec.securityContext.runAsUser) && object.spec.securityContext.runAsUser == ${uid})))`,
      `no container but ${PROXY_CONTAINER} may run as the proxy's uid ${uid}: its traffic would bypass the capture`,
    ),
    rule(`!(${annotated(ANNOTATIONS.auditMode, `${annotation(ANNOTATIONS.auditMode)}.trim() == 'off'`)})`, `${ANNOTATIONS.auditMode}: off is not allowed where auditing is mandatory`),
    rule(`!(${annotated(ANNOTATIONS.excludeInboundPorts, `${annotation(ANNOTATIONS.excludeInboundPorts)}.trim() == '*'`)})`, `${ANNOTATIONS.excludeInboundPorts}: * is not allowed where auditing is mandatory`),
    rule(
      `!(${annotated(ANNOTATIONS.excludeOutboundCidrs, wideCidr(annotation(ANNOTATIONS.excludeOutboundCidrs)))})`,
      `${ANNOTATIONS.excludeOutboundCidrs}: ranges wider than /${MIN_EXCLUDED_PREFIX} (0.0.0.0/0, ::/0) are not allowed where auditing is mandatory`,
    ),
  ];
}

/**
 * Optional: in namespaces labelled auditmesh.io/audit=mandatory, a pod is refused unless it runs
 * the sidecar as the injector renders it (image, args, init command: a container merely named
 * auditmesh-proxy is not enough) and sets none of the annotations that switch the audit off or
 * exclude all traffic. Runs after mutation, so it sees what the injector did.
 */
export function mandatoryAuditPolicy(o: InstallOptions): KubeObject[] {
  return [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: MANDATORY_AUDIT_POLICY, labels: componentLabels(INJECTOR) },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: { resourceRules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] }] },
        variables: variables(),
        validations: validations(o),
      },
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name: MANDATORY_AUDIT_POLICY, labels: componentLabels(INJECTOR) },
      spec: { policyName: MANDATORY_AUDIT_POLICY, validationActions: ['Deny'], matchResources: { namespaceSelector: { matchLabels: { [MANDATORY_AUDIT_LABEL]: 'mandatory' } } } },
    },
  ];
}
