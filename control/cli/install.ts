import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatHelp, parseFlags, UsageError, type FlagSpec, type FlagValues } from '../../command/flags.js';
import { choice, decimal, flag, flagsOf, optionalText, readSettings, text, whole } from '../../command/settings.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../injector/inject-flags.js';
import { collectorAddress, DEFAULT_NAMESPACE, type InstallOptions } from '../install/install-options.js';
import { renderInstall } from '../install/render-install.js';
import { quantityBytes } from '../injector/journal-limit.js';
import { MESH_CA_SECRET } from '../install/mesh-ca-secret.js';
import { monitoring } from '../install/monitoring.js';
import { dashboardFiles } from '../install/grafana/dashboards.js';
import { VERSION } from '../../command/version.js';
import type { CommandIO } from '../../command/io.js';
import { OUTPUT_FLAG, writeObjects } from './manifest-output.js';

/** The last 2.9 release of the official image; the tests run Debian's nats-server 2.9.10. */
const NATS_IMAGE = 'nats:2.9.25';

const quantity = (flag: string) => (value: string): void => {
  if ((quantityBytes(value) ?? 0) <= 0) throw new UsageError(`--${flag}: expected a quantity such as 20Gi, got ${JSON.stringify(value)}`);
};

// No environment fallbacks: the same command line must always render the same manifests.
const POLICY_FLAGS: readonly FlagSpec[] = INJECT_FLAGS.map((f) => ({ ...f, env: false }));

/** install's own settings; the injection policy's (POLICY_FLAGS) follow them on the command line. */
const INSTALL_SETTINGS = {
  namespace: text({ name: 'namespace', short: 'n', default: DEFAULT_NAMESPACE, help: "the control plane's namespace", env: false }),
  replicas: whole({ name: 'replicas', default: 2, help: 'injector replicas', env: false }, 1),
  certs: choice<InstallOptions['certs']>({ name: 'certs', default: 'cert-manager', choices: ['cert-manager', 'self-signed'], help: 'webhook certificate: cert-manager issues and renews it; self-signed makes a CA now and embeds it (re-run to renew)', env: false }),
  certValidDays: whole({ name: 'cert-valid-days', default: 365, help: "the webhook certificate's lifetime", env: false }),
  ca: optionalText({ name: 'ca', help: "the mesh CA (Secret auditmesh-mesh-ca): cert-manager issues it; self-signed makes one now and embeds it (re-rendering makes another: keep yours with --ca-dir). Default: as --certs", env: false }, (value) => {
    if (value !== 'cert-manager' && value !== 'self-signed') throw new UsageError(`--ca: expected cert-manager or self-signed, got ${JSON.stringify(value)}`);
  }),
  caDir: optionalText({ name: 'ca-dir', help: 'embed the mesh CA of DIR (ca.crt, ca.key) instead of a new one: re-render an install without replacing its trust root', env: false }),
  injectorResources: {
    cpu: text({ name: 'injector-cpu', default: '50m', help: 'injector CPU request', env: false }),
    memory: text({ name: 'injector-memory', default: '128Mi', help: 'injector memory request and limit', env: false }),
  },
  collectorResources: {
    cpu: text({ name: 'collector-cpu', default: '250m', help: 'collector CPU request', env: false }),
    memory: text({ name: 'collector-memory', default: '1Gi', help: 'collector memory request and limit', env: false }),
  },
  collectorStorage: text({ name: 'collector-storage', default: '20Gi', help: "size of the collector store's PersistentVolumeClaim", env: false }),
  storageClass: optionalText({ name: 'storage-class', help: "the claim's StorageClass (default: the cluster's)", env: false }),
  monitoring: flag({ name: 'monitoring', help: 'add PodMonitor, ServiceMonitor, PrometheusRule (needs the Prometheus Operator) and Grafana dashboard ConfigMaps', env: false }),
  alertDurationScale: decimal({ name: 'alert-duration-scale', default: 1, help: "multiply every duration the alert rules wait on (for:, shipping-lag thresholds): 0.01 makes a 15m alert fire in 9s, for tests", env: false }),
  monitoringOnly: flag({ name: 'monitoring-only', help: 'print only the monitoring objects, to add them to an existing install', env: false }),
  dashboardsDir: optionalText({ name: 'dashboards-dir', help: 'also write the Grafana dashboards into this folder as JSON files, to import them by hand', env: false }),
  mandatoryAuditPolicy: flag({ name: 'mandatory-audit-policy', help: 'add a ValidatingAdmissionPolicy refusing pods without the sidecar in namespaces labelled auditmesh.io/audit=mandatory (Kubernetes >= 1.30)', env: false }),
  ha: flag({ name: 'ha', help: 'the collector as a tier of replicas on a 3-server NATS JetStream cluster (StatefulSet), instead of one replica on its own volume', env: false }),
  collectorReplicas: whole({ name: 'collector-replicas', default: 3, help: 'collector replicas of the --ha tier', env: false }, 2),
  nats: {
    image: text({ name: 'nats-image', default: NATS_IMAGE, help: 'the NATS server image of the --ha tier (nats-server 2.9 or later)', env: false }),
    storage: text({ name: 'nats-storage', default: '20Gi', help: "size of each NATS server's PersistentVolumeClaim (--ha); JetStream may fill 90% of it", env: false }, quantity('nats-storage')),
    resources: {
      cpu: text({ name: 'nats-cpu', default: '500m', help: 'NATS server CPU request (--ha)', env: false }),
      memory: text({ name: 'nats-memory', default: '2Gi', help: 'NATS server memory request and limit (--ha)', env: false }, quantity('nats-memory')),
    },
  },
  output: choice<'yaml' | 'json'>({ ...OUTPUT_FLAG }),
};

const INSTALL_FLAGS: readonly FlagSpec[] = [...flagsOf(INSTALL_SETTINGS), ...POLICY_FLAGS];

export const INSTALL_HELP = formatHelp(
  'auditmesh install [flags] | kubectl apply -f -',
  "Prints the control plane's Kubernetes manifests: namespace, service accounts, the mesh CA,\ncollector (with its store's PersistentVolumeClaim), injector, its MutatingWebhookConfiguration\nand certificate, and optionally monitoring and a mandatory-audit policy. --ha renders the\ncollector as a tier of replicas on a NATS JetStream cluster instead. The --image ...\n--collector flags configure the sidecars the injector adds (default collector: the one installed\nhere).",
  INSTALL_FLAGS,
);

/** `auditmesh install`: renders the manifests to stdout; exit 2 on bad flags. */
export async function installMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(INSTALL_HELP);
    return 0;
  }
  let options: InstallOptions;
  let format: 'yaml' | 'json';
  let monitoringOnly: boolean;
  let dashboardsDir: string | undefined;
  try {
    const { values, positionals } = parseFlags(INSTALL_FLAGS, argv, io.env);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const settings = readSettings(INSTALL_SETTINGS, values, {});
    options = installOptionsFromFlags(values);
    format = settings.output;
    monitoringOnly = settings.monitoringOnly;
    dashboardsDir = settings.dashboardsDir;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh install: ${err.message}\n(see auditmesh install --help)\n`);
    return 2;
  }
  const header = `# auditmesh ${VERSION} control plane, rendered by: auditmesh install ${argv.join(' ')}\n`.replace(/ \n$/, '\n');
  if (dashboardsDir !== undefined) await writeDashboards(dashboardsDir);
  let objects;
  try {
    objects = monitoringOnly ? monitoring(options) : await renderInstall(options);
  } catch (err) {
    io.stderr.write(`auditmesh install: ${(err as Error).message}\n`);
    return 1;
  }
  if (!monitoringOnly && options.meshCa.source === 'self-signed' && options.meshCa.dir === undefined) {
    io.stderr.write(`auditmesh install: a new mesh CA is embedded (Secret ${MESH_CA_SECRET}); applied over a running install it replaces the trust root every sidecar holds. To keep a running one, render with --ca-dir DIR (its ca.crt and ca.key)\n`);
  }
  writeObjects(io, objects, format, header);
  return 0;
}

/** The options `auditmesh install ARGV` renders from (throws UsageError on bad flags). */
export function installOptions(argv: readonly string[]): InstallOptions {
  return installOptionsFromFlags(parseFlags(INSTALL_FLAGS, argv, {}).values);
}

export function installOptionsFromFlags(values: FlagValues): InstallOptions {
  const settings = readSettings(INSTALL_SETTINGS, values, {});
  const { namespace, alertDurationScale } = settings;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) throw new UsageError(`--namespace: not a namespace name: ${JSON.stringify(namespace)}`);
  if (!(alertDurationScale > 0 && alertDurationScale <= 1)) throw new UsageError('--alert-duration-scale: a number above 0, at most 1');
  // The sidecars ship to the collector installed here unless told otherwise.
  const policyValues: FlagValues = { ...values, collector: values.collector ?? collectorAddress(namespace) };
  const inject = injectOptionsFromFlags(policyValues);
  const meshCa = { source: (settings.ca ?? (settings.caDir !== undefined ? 'self-signed' : settings.certs)) as InstallOptions['meshCa']['source'], dir: settings.caDir };
  if (meshCa.source === 'cert-manager' && meshCa.dir !== undefined) throw new UsageError('--ca-dir embeds a CA of yours: it cannot go with --ca cert-manager');
  const injectArgs = POLICY_FLAGS.flatMap((f) => (policyValues[f.name] === undefined ? [] : [`--${f.name}`, String(policyValues[f.name])]));
  return {
    namespace,
    image: inject.image,
    imagePullPolicy: inject.imagePullPolicy,
    injectorReplicas: settings.replicas,
    injectorResources: settings.injectorResources,
    collectorResources: settings.collectorResources,
    collectorStorage: settings.collectorStorage,
    storageClass: settings.storageClass,
    certs: settings.certs,
    certValidDays: settings.certValidDays,
    meshCa,
    monitoring: settings.monitoring,
    alertDurationScale,
    mandatoryAuditPolicy: settings.mandatoryAuditPolicy,
    inject,
    injectArgs,
    ha: settings.ha,
    collectorReplicas: settings.collectorReplicas,
    nats: settings.nats,
  };
}

/** One `auditmesh-<name>.json` per dashboard, the same text the ConfigMaps carry. */
async function writeDashboards(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const { file, text } of dashboardFiles()) await writeFile(join(dir, file), text);
}
