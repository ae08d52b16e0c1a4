import type { ExecutionContext } from 'ava';
import { createNamespaces, sh } from '../helpers/netns.js';

/**
 * The harness' network: a node namespace with a bridge, one network namespace per pod joined to
 * it by a veth pair, and Services as ClusterIPs that the node DNATs to their pod, as kube-proxy
 * does. Pod addresses are /32 routed through the node, so a Service's reply passes the node's
 * conntrack too. Every address is private and exists only inside these namespaces.
 */
export interface PodNetwork {
  /** The node's namespace: probes and the test's own requests come from here. */
  readonly node: string;
  readonly nodeIp: string;
  /** A namespace and address for a new pod. */
  addPod(): Promise<{ ns: string; ip: string }>;
  /** A ClusterIP forwarding each port to a pod's target port. */
  addService(ports: Array<{ port: number; targetIp: string; targetPort: number }>): Promise<string>;
}

const POD_NET = '10.78.0';
const SERVICE_NET = '10.79.0';
const NODE_IP = `${POD_NET}.1`;

export async function createPodNetwork(t: ExecutionContext): Promise<PodNetwork> {
  const { node } = await createNamespaces(t, ['node']);
  const inNode = (...args: string[]): Promise<string> => sh('ip', 'netns', 'exec', node, ...args);
  await sh('ip', '-n', node, 'link', 'add', 'br0', 'type', 'bridge');
  await sh('ip', '-n', node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'br0');
  await sh('ip', '-n', node, 'link', 'set', 'br0', 'up');
  // Locally started connections to a ClusterIP need a route before OUTPUT's DNAT rewrites them.
  await sh('ip', '-n', node, 'route', 'add', `${SERVICE_NET}.0/24`, 'dev', 'br0');
  await inNode('sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.br0.send_redirects=0');
  let pods = 0;
  let services = 0;
  return {
    node,
    nodeIp: NODE_IP,
    async addPod() {
      const n = ++pods;
      const role = `pod${String.fromCharCode(96 + Math.ceil(n / 26))}${String.fromCharCode(97 + ((n - 1) % 26))}`;
      const { [role]: ns } = await createNamespaces(t, [role]);
      const ip = `${POD_NET}.${10 + n}`;
      const [host, peer] = [`amv${n}n${process.pid % 100000}`, `amv${n}p${process.pid % 100000}`];
      await sh('ip', 'link', 'add', host, 'netns', node, 'type', 'veth', 'peer', 'name', peer, 'netns', ns!);
      await sh('ip', '-n', ns!, 'link', 'set', peer, 'name', 'eth0');
      await sh('ip', '-n', node, 'link', 'set', host, 'master', 'br0', 'up');
      await sh('ip', '-n', ns!, 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
      await sh('ip', '-n', ns!, 'link', 'set', 'eth0', 'up');
      await sh('ip', '-n', ns!, 'route', 'add', NODE_IP, 'dev', 'eth0');
      await sh('ip', '-n', ns!, 'route', 'add', 'default', 'via', NODE_IP, 'dev', 'eth0');
      return { ns: ns!, ip };
    },
    async addService(ports) {
      // .1 is the kubernetes Service, as in a real cluster's service range.
      const ip = `${SERVICE_NET}.${++services}`;
      for (const p of ports) {
        for (const chain of ['PREROUTING', 'OUTPUT']) {
          await inNode('iptables', '-t', 'nat', '-A', chain, '-d', ip, '-p', 'tcp', '--dport', String(p.port), '-j', 'DNAT', '--to-destination', `${p.targetIp}:${p.targetPort}`);
        }
      }
      return ip;
    },
  };
}
