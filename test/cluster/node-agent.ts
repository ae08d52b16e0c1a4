import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { startIn } from '../helpers/netns.js';

export type AgentAnswer = { status?: number; body?: string; error?: string };
/** An HTTP(S) request (GET unless `method` says) made from the node's network namespace; https is verified against `ca` for `servername` when given, not verified otherwise (as kubelet probes). */
export type NodeRequest = (url: string, options?: { timeoutMs?: number; headers?: Record<string, string>; ca?: string; servername?: string; method?: string; body?: string }) => Promise<AgentAnswer>;

/** One long-lived client process in the node namespace (test/fixtures/cluster/node-agent.mjs), shared by probes and tests. */
export async function startNodeAgent(t: ExecutionContext, nodeNs: string): Promise<NodeRequest> {
  const agent = startIn(t, nodeNs, null, [process.execPath, 'test/fixtures/cluster/node-agent.mjs']);
  await agent.waitFor(/agent ready/, 30_000);
  const pending = new Map<number, (a: AgentAnswer) => void>();
  createInterface({ input: agent.child.stdout! }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const { id, ...answer } = JSON.parse(line) as AgentAnswer & { id: number };
    pending.get(id)?.(answer);
    pending.delete(id);
  });
  let next = 0;
  return (url, options = {}) =>
    new Promise((resolve) => {
      const id = ++next;
      pending.set(id, resolve);
      agent.child.stdin!.write(JSON.stringify({ id, url, ...options }) + '\n');
    });
}
