import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { startProcess, type Running } from './child.js';

const run = promisify(execFile);

function has(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why network-namespace interception tests cannot run here, or null when they can. */
export function interceptionUnavailable(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (ip netns, iptables, running processes as other uids)';
  const missing = ['ip', 'iptables', 'setpriv'].filter((c) => !has(c));
  if (missing.length > 0) return `missing ${missing.join(', ')} (Debian: apt-get install iptables iproute2 util-linux)`;
  return null;
}

/**
 * True when the test can go on. Without the prerequisites it fails under CI (CI=true, where
 * .ci/run installs them) and elsewhere ends the test with zero assertions and the reason logged.
 */
export function requireInterception(t: ExecutionContext): boolean {
  const reason = interceptionUnavailable();
  if (reason === null) return true;
  if (process.env.CI === 'true') {
    t.fail(`interception test cannot run under CI: ${reason}`);
  } else {
    t.log(`NOT RUN: ${reason}. CI runs it as root.`);
    t.plan(0);
  }
  return false;
}

/** Runs a command to completion; throws with its stderr when it fails. */
export async function sh(command: string, ...args: string[]): Promise<string> {
  try {
    return (await run(command, args)).stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${command} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

const PREFIX = 'amtest-';

/**
 * Creates network namespaces named `amtest-<role>-<pid>` with loopback up, deleted when the test
 * ends (pass or fail). Namespaces left by an earlier run whose process is gone are removed first.
 */
export async function createNamespaces<R extends string>(t: ExecutionContext, roles: readonly R[]): Promise<Record<R, string>> {
  for (const line of (await sh('ip', 'netns', 'list')).split('\n')) {
    const m = new RegExp(`^(${PREFIX}[a-z]+-(\\d+))\\b`).exec(line);
    if (m !== null && !alive(Number(m[2]))) await sh('ip', 'netns', 'del', m[1]!).catch(() => {});
  }
  const names = {} as Record<R, string>;
  for (const role of roles) {
    const name = `${PREFIX}${role}-${process.pid}`;
    names[role] = name;
    await sh('ip', 'netns', 'add', name);
    t.teardown(() => sh('ip', 'netns', 'del', name).catch(() => {}));
    await sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
  }
  return names;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Joins two namespaces with a veth pair: `a` gets addressA, `b` gets addressB (CIDR notation). Returns the two interface names. */
export async function link(a: string, addressA: string, b: string, addressB: string, tag: string): Promise<[string, string]> {
  const [ifA, ifB] = [`am${tag}a${process.pid % 100000}`, `am${tag}b${process.pid % 100000}`];
  await sh('ip', 'link', 'add', ifA, 'netns', a, 'type', 'veth', 'peer', 'name', ifB, 'netns', b);
  await sh('ip', '-n', a, 'addr', 'add', addressA, 'dev', ifA);
  await sh('ip', '-n', b, 'addr', 'add', addressB, 'dev', ifB);
  await sh('ip', '-n', a, 'link', 'set', ifA, 'up');
  await sh('ip', '-n', b, 'link', 'set', ifB, 'up');
  return [ifA, ifB];
}

/** Starts a command inside a namespace, as `uid` (and the same gid) when given; killed when the test ends. */
export function startIn(t: ExecutionContext, ns: string, uid: number | null, argv: string[], env: NodeJS.ProcessEnv = {}): Running {
  const asUser = uid === null ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
  // A clean environment: an app under test must not pick up a proxy from the test runner's.
  const base = { PATH: process.env.PATH, HOME: '/tmp', NODE_OPTIONS: process.env.NODE_OPTIONS };
  return startProcess(t, 'ip', ['netns', 'exec', ns, ...asUser, ...argv], { ...base, ...env });
}

/** One request from an agent: `proxy` (`host:port`) sends it there in absolute-form, as through HTTP_PROXY. */
export type Agent = (url: string, host?: string, proxy?: string) => Promise<{ status?: number; body?: string; error?: string }>;

/** An HTTP client living in a namespace (test/fixtures/netns/http-agent.mjs): one process, many requests. */
export async function startAgent(t: ExecutionContext, ns: string, uid: number | null): Promise<Agent> {
  const agent = startIn(t, ns, uid, [process.execPath, 'test/fixtures/netns/http-agent.mjs']);
  await agent.waitFor(/agent ready/, 45_000);
  let next = 0;
  return async (url, host, proxy) => {
    const id = ++next;
    agent.child.stdin!.write(JSON.stringify({ id, url, host, proxy }) + '\n');
    const m = await agent.waitFor(new RegExp(`^\\{"id":${id},.*\\}$`, 'm'), 10_000);
    return JSON.parse(m[0]) as { status?: number; body?: string; error?: string };
  };
}
