import test from 'ava';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { closeServer, listen } from './helpers/net.js';
import { startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

const MiB = 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'a');
/**
 * Streaming memory is bounded by buffers and garbage awaiting collection, not by the body: a
 * body four times larger must not raise the peak by more than this. A proxy that buffered
 * bodies would raise it by at least the extra 150 MiB.
 */
const MAX_PEAK_GROWTH_BYTES = 32 * MiB;

/** POSTs `bytes` generated on the fly and counts the echoed bytes, never holding the body. */
function streamThrough(port: number, bytes: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/big', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(n));
      res.on('error', reject);
    });
    req.on('error', reject);
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        sent += CHUNK.length;
        if (!req.write(CHUNK)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

async function memoryKb(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
}

test('a 50 MB body streams through the sidecar both ways with bounded sidecar memory', async (t) => {
  // Upstream echoes the body back as it arrives.
  const echo = http.createServer((req, res) => req.pipe(res));
  const appPort = await listen(echo);
  t.teardown(() => closeServer(echo));
  const dir = await tempDir(t);
  const sidecar = startCli(t, ['sidecar', '--app-port', String(appPort), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'j'), '--key', join(dir, 'k'), '--redaction-key', join(dir, 'rk')]);
  const inbound = Number((await sidecar.waitFor(/"inbound":(\d+)/))[1]);
  const pid = sidecar.child.pid!;
  // Warm the path once so lazily loaded code is not counted as growth.
  await new Promise<void>((resolve) => http.get({ host: '127.0.0.1', port: inbound, agent: false }, (res) => res.resume().on('end', resolve)));
  const rssBefore = (await memoryKb(pid, 'VmRSS')) * 1024;
  t.is(await streamThrough(inbound, 50 * MiB), 50 * MiB);
  const peak50 = (await memoryKb(pid, 'VmHWM')) * 1024;
  t.is(await streamThrough(inbound, 200 * MiB), 200 * MiB);
  const peak200 = (await memoryKb(pid, 'VmHWM')) * 1024;
  t.log(`sidecar RSS before ${(rssBefore / MiB).toFixed(1)} MiB; peak after 50 MiB each way ${(peak50 / MiB).toFixed(1)} MiB, after 200 MiB ${(peak200 / MiB).toFixed(1)} MiB`);
  t.true(peak200 - peak50 < MAX_PEAK_GROWTH_BYTES, `peak RSS rose by ${((peak200 - peak50) / MiB).toFixed(1)} MiB for a 4x larger body`);
  sidecar.child.kill('SIGTERM');
  t.is((await sidecar.done).code, 0);
});
