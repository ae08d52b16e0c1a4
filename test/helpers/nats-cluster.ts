import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { connect } from '@nats-io/transport-node';
import { tempDir } from './sidecar.js';

/**
 * A real NATS cluster with JetStream on loopback: `nats-server` (Debian's 2.9.10 here and in CI)
 * started by the test, every node with its own store folder in a temp folder and random free
 * client and cluster ports. A node can be killed with SIGKILL and started again on the same ports
 * and store, as a pod of a StatefulSet comes back.
 */

export const NATS_SERVER = process.env.AUDITMESH_NATS_SERVER ?? '/usr/sbin/nats-server';

export interface NatsNode {
  name: string;
  clientPort: number;
  clusterPort: number;
  storeDir: string;
  url: string;
  child: ChildProcess | null;
  /** Output so far, for a failing test's message. */
  output: string;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** Every node's client URL, comma-separated: what --jetstream takes. */
  urls: string;
  kill(i: number): void;
  start(i: number): Promise<void>;
  close(): void;
}

/** A port nothing listens on right now (the OS's pick). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts an `n`-node cluster (1: a single server, no routes) and waits until JetStream answers on every node. */
export async function startNatsCluster(t: ExecutionContext, n = 3): Promise<NatsCluster> {
  const dir = await tempDir(t, 'auditmesh-nats-');
  const nodes: NatsNode[] = [];
  for (let i = 0; i < n; i++) {
    const clientPort = await freePort();
    const clusterPort = await freePort();
    nodes.push({ name: `n${i}`, clientPort, clusterPort, storeDir: join(dir, `n${i}`), url: `nats://127.0.0.1:${clientPort}`, child: null, output: '' });
  }
  const routes = nodes.map((x) => `nats://127.0.0.1:${x.clusterPort}`).join(',');
  const launch = (node: NatsNode): void => {
    const args = ['-a', '127.0.0.1', '-p', String(node.clientPort), '-js', '-sd', node.storeDir, '-n', node.name];
    if (n > 1) args.push('--cluster_name', 'auditmesh-test', '--cluster', `nats://127.0.0.1:${node.clusterPort}`, '--routes', routes);
    const child = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (c: Buffer): void => void (node.output = (node.output + c.toString()).slice(-20_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.on('error', (err) => void (node.output += `\nspawn failed: ${err.message}`));
    node.child = child;
  };
  const cluster: NatsCluster = {
    nodes,
    urls: nodes.map((x) => x.url).join(','),
    kill(i) {
      nodes[i].child?.kill('SIGKILL');
      nodes[i].child = null;
    },
    async start(i) {
      launch(nodes[i]);
      await jetStreamReady(nodes[i]);
    },
    close() {
      for (const node of nodes) node.child?.kill('SIGKILL');
    },
  };
  t.teardown(() => cluster.close());
  // A test file ended by a timeout runs no teardown: the servers must not outlive the process.
  process.once('exit', () => cluster.close());
  for (const node of nodes) launch(node);
  await Promise.all(nodes.map((node) => jetStreamReady(node)));
  return cluster;
}

/** Until the node answers JetStream's account info (in a cluster: once a meta leader is elected). */
async function jetStreamReady(node: NatsNode, timeoutMs = 30_000): Promise<void> {
  const started = Date.now();
  let last = '';
  while (Date.now() - started < timeoutMs) {
    try {
      const nc = await connect({ servers: node.url, reconnect: false, timeout: 1_000 });
      try {
        const reply = await nc.request('$JS.API.INFO', undefined, { timeout: 1_000 });
        const info = reply.json<{ error?: { description: string } }>();
        if (info.error === undefined) return;
        last = info.error.description;
      } finally {
        await nc.close();
      }
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`nats node ${node.name} (${node.url}) has no JetStream after ${timeoutMs} ms: ${last}\n${node.output}`);
}
