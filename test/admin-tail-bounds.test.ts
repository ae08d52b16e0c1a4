import test from 'ava';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { createLiveFeed } from '../command/live-feed.js';
import type { JournalRecord } from '../ledger/record.js';
import { createAdminServer } from '../command/admin-server.js';
import { parseSidecarConfig } from '../proxy/config.js';
import { closeServer, rawExchange, request } from './helpers/net.js';
import { metricValue, scrape, startTestSidecar, until } from './helpers/sidecar.js';

// The sidecar's admin /tail is bounded (issue 22, item 5): at most --max-tail-subscribers at once,
// and a subscriber that does not read is cut off and counted; the admin server answers malformed
// targets with a 4xx and keeps serving.

const statusOf = (raw: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);

/** A raw /tail subscription that reads nothing once its first bytes are in; resolves with them. */
function openTail(port: number): Promise<{ head: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('error', reject);
    socket.once('data', (chunk) => {
      socket.pause();
      socket.off('error', reject).on('error', () => {});
      resolve({ head: chunk.toString('latin1'), socket });
    });
    socket.write('GET /tail HTTP/1.1\r\nHost: admin\r\n\r\n');
  });
}

test('past --max-tail-subscribers a new /tail subscriber gets 503 with the reason, counted; one leaving makes room', async (t) => {
  const sidecar = await startTestSidecar(t, { maxTailSubscribers: 2 });
  const first = await Promise.all([openTail(sidecar.ports.admin), openTail(sidecar.ports.admin)]);
  t.teardown(() => first.forEach((s) => s.socket.destroy()));
  t.deepEqual(first.map((s) => statusOf(s.head)), [200, 200]);
  const refused = await request(sidecar.ports.admin, { path: '/tail' });
  t.is(refused.status, 503);
  t.regex(refused.body.toString(), /too many live-tail subscribers: at most 2 at once \(--max-tail-subscribers\)/);
  t.is(metricValue(await scrape(sidecar.ports.admin), 'auditmesh_tail_turned_away_total', { reason: 'at_capacity' }), 1);

  first[0].socket.destroy();
  await until(async () => metricValue(await scrape(sidecar.ports.admin), 'auditmesh_tail_subscribers') === 1, 'one subscriber left');
  const again = await openTail(sidecar.ports.admin);
  t.teardown(() => again.socket.destroy());
  t.is(statusOf(again.head), 200);
});

test('a /tail subscriber that stops reading is cut off and counted; one that reads gets every record', async (t) => {
  const registry = new Registry();
  const feed = createLiveFeed<JournalRecord>();
  const admin = createAdminServer({ registry, ready: () => ({ ok: true }), subscribe: (l) => feed.subscribe(l), tail: { maxSubscribers: 4, maxBufferBytes: 256 * 1024 } });
  await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(admin));
  const port = (admin.address() as AddressInfo).port;
  const stalled = await openTail(port);
  t.teardown(() => stalled.socket.destroy());
  let read = '';
  const reader = await openTail(port);
  t.teardown(() => reader.socket.destroy());
  reader.socket.on('data', (chunk) => (read += chunk.toString('latin1')));
  reader.socket.resume();

  const pad = 'x'.repeat(64 * 1024);
  let sent = 0;
  // Kernel buffers take a few MiB first; then the stalled subscriber's own buffer passes its bound.
  while (feed.size === 2 && sent < 2000) {
    feed.publish({ 'audit.seq': sent++, 'url.path': pad } as unknown as JournalRecord);
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.is(feed.size, 1, 'the stalled subscriber was cut off; the reader is still subscribed');
  t.is(metricValue(await registry.metrics(), 'auditmesh_tail_turned_away_total', { reason: 'slow_reader' }), 1);
  await until(async () => (read.match(/^id: /gm) ?? []).length === sent, `the reader got all ${sent} records`);
});

const HOSTILE_TARGETS: Array<[string, number]> = [
  ['//[', 404],
  ['/%zz', 400],
  ['/metrics?name=%zz', 400],
  ['/re\0adyz', 400],
  ['http://[/readyz', 400],
  [`/metrics?${'a=1&'.repeat(10_000)}`, 431],
];

test('the admin server answers malformed targets with a 4xx and keeps serving', async (t) => {
  const sidecar = await startTestSidecar(t);
  for (const [target, status] of HOSTILE_TARGETS) {
    const raw = await rawExchange(sidecar.ports.admin, `GET ${target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n`);
    t.is(statusOf(raw), status, `${JSON.stringify(target.slice(0, 40))}: ${raw.slice(0, 120)}`);
    t.is((await request(sidecar.ports.admin, { path: '/readyz' })).status, 200);
  }
});

test('--max-tail-subscribers defaults to 64 and is checked at boot', (t) => {
  t.is(parseSidecarConfig([], {}).maxTailSubscribers, 64);
  t.is(parseSidecarConfig([], { AUDITMESH_MAX_TAIL_SUBSCRIBERS: '5' }).maxTailSubscribers, 5);
  t.throws(() => parseSidecarConfig(['--max-tail-subscribers', '0'], {}), { message: /--max-tail-subscribers: at least 1/ });
});
