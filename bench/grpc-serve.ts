// Child entry: `node --import=tsx bench/grpc-serve.ts <upstream|sidecar-off|sidecar-async> [upstreamPort]`.
// Prints {"port":N} and stops cleanly on SIGTERM.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEchoServer } from './grpc-service.js';
import { sidecarConfig } from '../proxy/config.js';
import { startSidecar } from '../proxy/sidecar.js';

const [kind, upstreamPort] = process.argv.slice(2);

async function start(): Promise<{ port: number; close(): Promise<void> }> {
  if (kind === 'upstream') return startEchoServer();
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-grpc-bench-'));
  const sidecar = await startSidecar(
    sidecarConfig({
      service: 'bench',
      appPort: Number(upstreamPort),
      auditMode: kind === 'sidecar-off' ? 'off' : 'async',
      journalDir: join(dir, 'journal'),
      keyFile: join(dir, 'sidecar.key'),
      redactionKeyFile: join(dir, 'redaction.key'),
    }),
  );
  return {
    port: sidecar.ports.inbound!,
    async close() {
      await sidecar.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const served = await start();
process.stdout.write(JSON.stringify({ port: served.port }) + '\n');
process.once('SIGTERM', () => {
  void served.close().then(() => process.exit(0));
});
