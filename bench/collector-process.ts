// The collector under benchmark in its own process (ingest-serve.ts), as bench/ingest.ts and
// bench/certify.ts start it: PROFILE=1 runs it with --cpu-prof (bench/results/profiles/),
// COLLECTOR_NODE_FLAGS adds node flags.
import { Agent, fetch as undiciFetch } from 'undici';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openMeshCa, type MeshCa } from '../control/collector/ingest/mesh-ca.js';
import { createTokenIssuer, type TokenIssuer } from '../test/cluster/token-issuer.js';

const SERVE_SCRIPT = fileURLToPath(new URL('./ingest-serve.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Starts it on `storeDir`; `serveArgs` after the store folder select mTLS or identity (ingest-serve.ts); `env` adds to its environment (RECONCILE=0). */
export async function startCollector(storeDir: string, serveArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ address: string; http: string; pid: number; stop(): Promise<void> }> {
  const profile = process.env.PROFILE === '1' ? ['--cpu-prof', '--cpu-prof-dir=bench/results/profiles'] : [];
  if (process.env.COLLECTOR_NODE_FLAGS) profile.push(...process.env.COLLECTOR_NODE_FLAGS.split(' '));
  const child = spawn(process.execPath, ['--import=tsx', ...profile, SERVE_SCRIPT, storeDir, ...serveArgs], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const stop = (): Promise<void> => new Promise((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', () => resolve()), child.kill('SIGTERM'))));
  const lines = createInterface({ input: child.stdout! });
  const first = await lines[Symbol.asyncIterator]().next();
  lines.close();
  child.stdout!.resume();
  if (first.done === true) throw new Error('the collector exited before listening (its stderr is above)');
  const { grpc: g, http } = JSON.parse(first.value as string) as { grpc: number; http: number };
  // With a mesh CA (mtls, identity) the collector's HTTP API serves HTTPS.
  const scheme = serveArgs[0] === 'mtls' || serveArgs[0] === 'identity' ? 'https' : 'http';
  return { address: `127.0.0.1:${g}`, http: `${scheme}://127.0.0.1:${http}`, pid: child.pid!, stop };
}

/** What a collector with identity needs in `dir`: a ServiceAccount token issuer and its JWKS, a shared token file, a mesh CA. */
export interface IdentitySetup {
  issuer: TokenIssuer;
  ca: MeshCa;
  caFile: string;
  tokens: string;
  /** ingest-serve.ts's arguments after the store folder: a collector with this CA that checks this issuer's tokens. */
  serveArgs: string[];
}

export async function identitySetup(dir: string): Promise<IdentitySetup> {
  const issuer = await createTokenIssuer();
  const jwks = join(dir, 'jwks.json');
  await writeFile(jwks, JSON.stringify(issuer.jwks()));
  const tokens = join(dir, 'tokens');
  await writeFile(tokens, 'bench-shared-token\n', { mode: 0o600 });
  const caDir = join(dir, 'ca');
  const ca = await openMeshCa(caDir, { create: true });
  return { issuer, ca, caFile: join(caDir, 'ca.crt'), tokens, serveArgs: ['identity', caDir, tokens, jwks, issuer.issuer] };
}

/** The collector's /metrics text; over HTTPS trusting the mesh CA bundle `caFile`. */
export async function collectorMetrics(http: string, caFile?: string): Promise<string> {
  const dispatcher = caFile === undefined ? undefined : new Agent({ connect: { ca: await readFile(caFile, 'utf8') } });
  try {
    return await (await undiciFetch(`${http}/metrics`, { dispatcher })).text();
  } finally {
    await dispatcher?.close();
  }
}
