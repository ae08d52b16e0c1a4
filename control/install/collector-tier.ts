import { collector } from './control-plane.js';
import { COLLECTOR, componentLabels, type InstallOptions, type KubeObject } from './install-options.js';
import { natsUrls } from './nats-cluster.js';

/**
 * `install --ha`: the collector as a tier of replicas on NATS JetStream. Each replica is the
 * single collector's pod (same image, ports, probes, identity, mounts, read policy, Service and
 * NetworkPolicy) with three differences: `--jetstream` names the NATS servers, its store holds
 * only rebuildable query indexes and so lives on an emptyDir, and replicas roll one by one since
 * no volume ties them to a node.
 */

type Volume = { name: string; [source: string]: unknown };
type PodTemplate = { metadata: { labels: Record<string, string> }; spec: { containers: Array<{ name: string; args: string[] }>; volumes: Volume[]; [k: string]: unknown } };

/**
 * The collector's arguments in a tier: the single collector's, then every NATS server by its
 * stable name. The collectors create the stream and buckets themselves, on file storage with one
 * replica on each of the NATS_REPLICAS servers (a quorum acknowledges a publish).
 */
function tierArgs(o: InstallOptions, args: readonly string[]): string[] {
  return [...args, '--jetstream', natsUrls(o.namespace).join(',')];
}

/** The collector objects of `install --ha`: the single collector's, its store volume gone, its Deployment made a tier, and a PodDisruptionBudget. */
export function collectorTier(o: InstallOptions): KubeObject[] {
  const objects = collector(o).filter((x) => !(x.kind === 'PersistentVolumeClaim' && x.metadata.name === `${COLLECTOR}-store`));
  const deployment = objects.find((x) => x.kind === 'Deployment' && x.metadata.name === COLLECTOR);
  if (deployment === undefined) throw new Error('collector(): no Deployment to make a tier of');
  const spec = deployment.spec as { replicas: number; strategy: unknown; template: PodTemplate };
  spec.replicas = o.collectorReplicas;
  spec.strategy = { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 1 } };
  const pod = spec.template.spec;
  const main = pod.containers.find((c) => c.name === 'collector')!;
  main.args = tierArgs(o, main.args);
  // The indexes are rebuilt from the stream, so a lost emptyDir costs time, not records.
  pod.volumes = pod.volumes.map((v) => (v.name === 'store' ? { name: 'store', emptyDir: { sizeLimit: o.collectorStorage } } : v));
  pod.topologySpreadConstraints = [{ maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: { 'app.kubernetes.io/name': COLLECTOR } } }];
  const budget: KubeObject = {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: { name: COLLECTOR, namespace: o.namespace, labels: componentLabels(COLLECTOR) },
    spec: { maxUnavailable: 1, selector: { matchLabels: { 'app.kubernetes.io/name': COLLECTOR } } },
  };
  return [...objects, budget];
}
