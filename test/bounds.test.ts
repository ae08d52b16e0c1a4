import test from 'ava';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { openFds, rssBytes } from '../bench/proc-stats.js';
import { closeServer, listen, request, startUpstream } from './helpers/net.js';
import { SECRET, SECRET_HEADERS, assertJournalSound, assertSound, startHostile } from './helpers/hostile.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { scrape } from './helpers/sidecar.js';

// Resource bounds (issue 8): memory and file descriptors of a sidecar process under a thousand
// slow clients stay bounded and come back once they leave. Read from /proc, as an operator would.

const SLOW_CLIENTS = 1000;
const MIB = 2 ** 20;

async function until(check: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A client that sends a little every half second and never finishes: headers (slowloris) or a body. */
function slowClient(t: ExecutionContext, port: number, kind: 'headers' | 'body'): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.on('data', () => {});
  t.teardown(() => socket.destroy());
  socket.once('connect', () => {
    socket.write(kind === 'headers' ? `GET /slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${SECRET}\r\n` : `POST /slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${SECRET}\r\nContent-Length: 100000\r\n\r\n`);
    const drip = setInterval(() => (socket.writable ? socket.write(kind === 'headers' ? 'X-A: b\r\n' : 'aaaaaaaaaa') : clearInterval(drip)), 500);
    socket.once('close', () => clearInterval(drip));
  });
  return socket;
}

test.serial('a thousand concurrent slow clients: descriptors and memory stay bounded, others are served, and both return near baseline', async (t) => {
  t.timeout(180_000);
  const app = await startUpstream();
  t.teardown(app.close);
  // Long headers timeout: the slow clients are held for the whole test, not cut at 408. A pool
  // larger than the slow uploads: at the default (256 per upstream) they would hold every pooled
  // socket and queue the normal request behind them (see the closing note of issue 8).
  const sidecar = await startSidecarProcess(t, { appPort: app.port, args: ['--headers-timeout-ms', '120000', '--max-sockets-per-upstream', '1024'] });
  for (let i = 0; i < 50; i++) t.is((await request(sidecar.ports.inbound, { headers: SECRET_HEADERS })).status, 200);
  const baseFds = openFds(sidecar.pid)!;
  const baseRss = rssBytes(sidecar.pid)!;

  const clients = Array.from({ length: SLOW_CLIENTS }, (_, i) => slowClient(t, sidecar.ports.inbound, i % 2 === 0 ? 'headers' : 'body'));
  // Each slow client holds one descriptor; each slow body one more, to the app.
  await until(() => openFds(sidecar.pid)! >= baseFds + SLOW_CLIENTS, 'every slow client is connected');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const peakFds = openFds(sidecar.pid)!;
  const peakRss = rssBytes(sidecar.pid)!;
  const during = await request(sidecar.ports.inbound, { path: '/while-slow', headers: SECRET_HEADERS });
  t.is(during.status, 200, 'a normal request is served among a thousand slow clients');
  t.true(peakFds <= baseFds + SLOW_CLIENTS * 1.5 + 64, `fds ${baseFds} -> ${peakFds}`);
  t.true(peakRss <= baseRss + 256 * MIB, `RSS ${(baseRss / MIB).toFixed(0)} -> ${(peakRss / MIB).toFixed(0)} MiB`);

  for (const c of clients) c.destroy();
  await until(() => openFds(sidecar.pid)! <= baseFds + 16, 'descriptors come back near baseline');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const afterFds = openFds(sidecar.pid)!;
  const afterRss = rssBytes(sidecar.pid)!;
  t.log(`fds ${baseFds} -> ${peakFds} -> ${afterFds}; RSS ${(baseRss / MIB).toFixed(1)} -> ${(peakRss / MIB).toFixed(1)} -> ${(afterRss / MIB).toFixed(1)} MiB`);
  t.true(afterRss <= baseRss + 128 * MIB, 'memory comes back near baseline');
  t.is((await request(sidecar.ports.inbound, { path: '/after' })).status, 200);
  const metrics = await scrape(sidecar.ports.admin);
  const exit = await sidecar.stop();
  await assertJournalSound(t, sidecar.journalDir, { logs: exit.stderr, '/metrics': metrics });
});

test.serial('an upstream that answers before the body ends, then clients that abort their uploads: every upstream connection is released', async (t) => {
  // Answers as soon as the headers arrive, without reading the body.
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', (data) => {
      const path = data.toString('latin1').split(' ')[1];
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      if (path === '/still-serving') socket.end();
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const connections = (): Promise<number> => new Promise((resolve) => server.getConnections((_e, n) => resolve(n)));
  const h = await startHostile(t, { port, kind: 'http' });
  await Promise.all(
    Array.from({ length: 20 }, () =>
      new Promise<void>((resolve) => {
        const s = net.connect(h.sidecar.ports.inbound!, '127.0.0.1');
        s.on('error', () => {});
        s.write(`POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${SECRET}\r\nContent-Length: 100000\r\n\r\n${'a'.repeat(1000)}`);
        s.once('data', () => (s.destroy(), resolve()));
      }),
    ),
  );
  const end = performance.now() + 20_000;
  while ((await connections()) > 0 && performance.now() < end) await new Promise((resolve) => setTimeout(resolve, 100));
  t.is(await connections(), 0, 'upstream connections still held for clients that are gone');
  await assertSound(t, h);
});
