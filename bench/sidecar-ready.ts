// The sidecar's start-to-ready time: from spawning `node bin/auditmesh.js sidecar` (the built
// CLI, as the image runs it; `npm run build` first) to its first /readyz 200, with a fresh key
// and journal each start, in three setups measured interleaved in the same run:
//   journal only      no --collector
//   shared token      --collector (a plaintext collector) --collector-token-file: the baseline
//   identity          --collector --identity-token-file --ca-file: the journal key certified by
//                     the mesh CA (Certify over TLS) before the sidecar serves
//
//   node --import=tsx bench/sidecar-ready.ts     knobs: REPEATS=7 (starts per setup)
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { identitySetup, startCollector } from './collector-process.js';
import { spread } from './summary.js';
import { formatTable } from './table.js';

const REPEATS = Number(process.env.REPEATS ?? 7);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const READY_TIMEOUT_MS = 60_000;

/** A port free now (listen on 0, close). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function readyz(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/readyz', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
  });
}

/** One start: ms from spawn to the first /readyz 200; then SIGTERM and its exit. */
async function startToReady(dir: string, appPort: number, args: string[]): Promise<number> {
  const [inbound, outbound, admin] = [await freePort(), await freePort(), await freePort()];
  const argv = ['bin/auditmesh.js', 'sidecar', '--app-port', String(appPort), '--inbound-port', String(inbound), '--outbound-port', String(outbound), '--admin-port', String(admin), '--journal', join(dir, 'journal'), '--key', join(dir, 'sidecar.key'), '--redaction-key', join(dir, 'redaction.key'), '--log-level', 'warn', ...args];
  const started = performance.now();
  const child = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the sidecar exited ${child.exitCode}: ${stderr}`);
      if ((await readyz(admin)) === 200) return performance.now() - started;
      if (performance.now() - started > READY_TIMEOUT_MS) throw new Error(`not ready within ${READY_TIMEOUT_MS} ms: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-ready-'));
  const app = http.createServer((_, res) => res.end('ok'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const appPort = (app.address() as AddressInfo).port;
  try {
    const { issuer, caFile, tokens, serveArgs } = await identitySetup(dir);
    const identityToken = join(dir, 'identity-token');
    await writeFile(identityToken, await issuer.sign({ namespace: 'bench', pod: { name: 'ready-0', uid: 'u' }, serviceAccount: { name: 'ready', uid: 's' } }, { audience: 'auditmesh', expirationSeconds: 3600 }));
    const plain = await startCollector(join(dir, 'store-plain'));
    const mesh = await startCollector(join(dir, 'store-mesh'), serveArgs);
    const setups: Array<{ name: string; args: string[]; ms: number[] }> = [
      { name: 'journal only (no --collector)', args: [], ms: [] },
      { name: 'shipping with a shared token (baseline)', args: ['--collector', plain.address, '--collector-token-file', tokens], ms: [] },
      { name: 'shipping with identity (Certify, then mTLS)', args: ['--collector', mesh.address, '--identity-token-file', identityToken, '--ca-file', caFile, '--sidecar-id', 'bench/ready-0'], ms: [] },
    ];
    try {
      // One start of each first, unmeasured: the page cache holds the code afterwards.
      for (const s of setups) await startToReady(join(dir, `warm-${setups.indexOf(s)}`), appPort, s.args);
      for (let r = 0; r < REPEATS; r++) for (const [k, s] of setups.entries()) s.ms.push(await startToReady(join(dir, `run-${r}-${k}`), appPort, s.args));
    } finally {
      await Promise.all([plain.stop(), mesh.stop()]);
    }
    const base = spread(setups[1].ms)!.median;
    const rows = setups.map((s) => {
      const { median, min, max } = spread(s.ms)!;
      return [s.name, String(s.ms.length), median.toFixed(0), `${min.toFixed(0)}..${max.toFixed(0)}`, (median / base).toFixed(2)];
    });
    process.stdout.write(formatTable(['setup', 'starts', 'median ms', 'range ms', 'vs baseline'], rows) + '\n');
    process.stdout.write(`spawn of the built CLI to the first /readyz 200, a fresh key and journal each start, setups interleaved; ${availableParallelism()} CPUs, load average ${loadavg()[0].toFixed(1)}\n`);
  } finally {
    app.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
