import type { ObjectStore } from './objects.js';
import { fieldValue, type Container, type PodInfo } from './pod-fields.js';
import type { Image } from './image-registry.js';
import { objectData } from './volumes.js';

/** What one container runs: the exact argv, env and identity the kubelet would give it. */
export interface ContainerRun {
  argv: string[];
  env: Record<string, string>;
  uid: number;
  gid: number;
  groups: number[];
  workdir: string;
  readOnlyRoot: boolean;
  /** Capabilities kept (bounding set), lowercase without CAP_; undefined keeps the runtime's. */
  capabilities: string[] | undefined;
  noNewPrivs: boolean;
}

/** `$(VAR)` references as Kubernetes expands them: defined names only, `$$` escapes. */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) => (name === undefined ? '$' : (env[name] ?? whole)));
}

/** The container's environment: the image's, what Kubernetes adds to every container, then its own `env` in order. */
function environment(c: Container, pod: PodInfo, store: ObjectStore, image: Image, kubernetesService: string): Record<string, string> {
  const env: Record<string, string> = { ...image.env, HOSTNAME: pod.name, KUBERNETES_SERVICE_HOST: kubernetesService, KUBERNETES_SERVICE_PORT: '443', KUBERNETES_SERVICE_PORT_HTTPS: '443', KUBERNETES_PORT: `tcp://${kubernetesService}:443` };
  for (const e of c.env ?? []) {
    if (e.value !== undefined || e.valueFrom === undefined) {
      env[e.name] = expand(e.value ?? '', env);
      continue;
    }
    const [kind, ref] = Object.entries(e.valueFrom)[0]!;
    if (kind === 'fieldRef') env[e.name] = fieldValue(pod, ref.fieldPath as string);
    else if (kind === 'secretKeyRef' || kind === 'configMapKeyRef') {
      const data = objectData({ store, pod }, kind === 'secretKeyRef' ? 'secret' : 'configMap', ref.name as string, ref.optional === true);
      const value = data?.[ref.key as string];
      if (value === undefined && ref.optional !== true) throw new Error(`container ${c.name}: env ${e.name}: key "${String(ref.key)}" not found in ${kind === 'secretKeyRef' ? 'secret' : 'configmap'} "${String(ref.name)}"`);
      if (value !== undefined) env[e.name] = value.toString('utf8');
    } else throw new Error(`container ${c.name}: env ${e.name}: valueFrom ${kind} is not supported by the harness`);
  }
  return env;
}

/** The container's command line, environment and security settings, refused where the kubelet would refuse. */
export function containerRun(c: Container, pod: PodInfo, store: ObjectStore, image: Image, kubernetesService: string): ContainerRun {
  const env = environment(c, pod, store, image, kubernetesService);
  const words = c.command !== undefined ? [...c.command, ...(c.args ?? [])] : [...image.entrypoint, ...(c.args ?? [])];
  const argv = words.map((w) => expand(w, env));
  const podSc = pod.object.spec.securityContext ?? {};
  const sc = c.securityContext ?? {};
  const uid = sc.runAsUser ?? podSc.runAsUser ?? image.user ?? 0;
  const gid = sc.runAsGroup ?? podSc.runAsGroup ?? 0;
  if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) === true && uid === 0) throw new Error(`container ${c.name}: container has runAsNonRoot and image will run as root`);
  const caps = sc.capabilities;
  const dropsAll = caps?.drop?.some((d) => d.toUpperCase() === 'ALL') === true;
  return {
    argv,
    env,
    uid,
    gid,
    groups: podSc.fsGroup !== undefined ? [podSc.fsGroup] : [],
    workdir: image.workdir,
    readOnlyRoot: sc.readOnlyRootFilesystem === true,
    capabilities: dropsAll ? (caps?.add ?? []).map((a) => a.toLowerCase().replace(/^cap_/, '')) : undefined,
    noNewPrivs: sc.allowPrivilegeEscalation === false,
  };
}

/** A host path bound at a path of the container's root. */
export interface Bind {
  host: string;
  path: string;
  readOnly: boolean;
  file: boolean;
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Host folders a container root is made of (read-only): what a base image would bring. */
const SYSTEM_DIRS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr'];

/**
 * The shell script that turns a fresh mount and UTS namespace into the container: a tmpfs root
 * with the host's system folders read-only, the image's files and the pod's volumes bound at
 * their paths, its own /etc/hosts, /etc/resolv.conf and hostname, then chroot, uid, groups,
 * capabilities, and exactly its env and argv.
 */
export function containerScript(root: string, hostname: string, run: ContainerRun, binds: Bind[]): string {
  const lines = ['set -e', `R=${q(root)}`, 'mount -t tmpfs -o mode=755 tmpfs "$R"'];
  for (const d of SYSTEM_DIRS) {
    lines.push(`if [ -L /${d} ]; then ln -s "$(readlink /${d})" "$R/${d}"; elif [ -d /${d} ]; then mkdir "$R/${d}" && mount --rbind /${d} "$R/${d}" && mount -o remount,bind,ro "$R/${d}"; fi`);
  }
  // /etc is the image's own: an overlay on the host's, so mount points under it (a Secret at
  // /etc/auditmesh/tls) never touch the host.
  lines.push('mkdir -p "$R/.etc/upper" "$R/.etc/work" "$R/etc"', 'mount -t overlay overlay -o lowerdir=/etc,upperdir="$R/.etc/upper",workdir="$R/.etc/work" "$R/etc"');
  lines.push('mkdir -p "$R/proc" "$R/dev" "$R/sys" "$R/tmp" "$R/run" "$R/var/run"', 'mount --rbind /proc "$R/proc"', 'mount --rbind /dev "$R/dev"', 'mount --rbind /sys "$R/sys"');
  if (!run.readOnlyRoot) lines.push('mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"', 'mount -t tmpfs -o mode=755 tmpfs "$R/run"');
  const sorted = [...binds].sort((a, b) => a.path.split('/').length - b.path.split('/').length);
  for (const b of sorted) {
    const target = `"$R"${q(b.path)}`;
    lines.push(b.file ? `[ -e ${target} ] || { mkdir -p "$(dirname ${target})" && touch ${target}; }` : `mkdir -p ${target}`);
    lines.push(`mount --bind ${q(b.host)} ${target}`);
    if (b.readOnly) lines.push(`mount -o remount,bind,ro ${target}`);
  }
  lines.push(`echo ${q(hostname)} > /proc/sys/kernel/hostname`);
  if (run.readOnlyRoot) lines.push('mount -o remount,ro "$R"');
  const priv = ['/usr/bin/setpriv', `--reuid=${run.uid}`, `--regid=${run.gid}`, run.groups.length > 0 ? `--groups=${run.groups.join(',')}` : '--clear-groups'];
  if (run.capabilities !== undefined) priv.push(`--bounding-set=-all${run.capabilities.map((c) => `,+${c}`).join('')}`, '--inh-caps=-all');
  if (run.noNewPrivs) priv.push('--no-new-privs');
  const env = Object.entries(run.env).map(([k, v]) => q(`${k}=${v}`));
  lines.push(`exec chroot "$R" ${priv.join(' ')} /usr/bin/env -i -C ${q(run.workdir)} ${env.join(' ')} ${run.argv.map(q).join(' ')}`);
  return lines.join('\n');
}
