import test from 'ava';
import net from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { startCli, type Running } from './helpers/child.js';
import { rawExchange } from './helpers/net.js';
import { metricValue, tempDir, until } from './helpers/sidecar.js';

// Hostile HTTP against the collector's API (issue 22, item 5), in a process of its own so that a
// request that kills it shows as a dead process: every case gets a 4xx (or an answer), and then
// the same process still answers /readyz and /v1/sidecars.

interface CollectorProcess {
  running: Running;
  port: number;
  url: string;
}

async function startCollector(t: ExecutionContext, args: string[] = []): Promise<CollectorProcess> {
  const dir = await tempDir(t);
  const running = startCli(t, ['collector', '--store', join(dir, 'store'), '--grpc-port', '0', '--http-port', '0', '--insecure', ...args]);
  const [, port] = await running.waitFor(/"http":"http:\/\/127\.0\.0\.1:(\d+)"/, 60_000);
  return { running, port: Number(port), url: `http://127.0.0.1:${port}` };
}

function statusOf(raw: string): number {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(raw);
  return m === null ? 0 : Number(m[1]);
}

/** The collector is alive and serving: not exited, /readyz and /v1/sidecars answer 200. */
async function assertServing(t: ExecutionContext, c: CollectorProcess, after: string): Promise<void> {
  t.is(c.running.child.exitCode, null, `the collector exited after ${after}:\n${c.running.output().stderr.slice(-2000)}`);
  const ready = await fetch(`${c.url}/readyz`).catch((err: Error) => err);
  t.true(!(ready instanceof Error) && ready.status === 200, `/readyz after ${after}: ${ready instanceof Error ? ready.message : ready.status}`);
  const sidecars = await fetch(`${c.url}/v1/sidecars`).catch((err: Error) => err);
  t.true(!(sidecars instanceof Error) && sidecars.status === 200, `/v1/sidecars after ${after}`);
}

const get = (target: string): string => `GET ${target} HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n`;

/** [case, raw request, expected status]. */
const HOSTILE: Array<[string, string, number]> = [
  ['`//[` as the target (new URL() threw on it): a path like any other', get('//['), 404],
  ['`//[` on the records route', get('//[/v1/records?service=a'), 404],
  ['malformed percent-encoding in the path', get('/%zz'), 400],
  ['malformed percent-encoding in a parameter', get('/v1/records?service=%zz'), 400],
  ['absolute-form is accepted and routed by its path', get('http://collector/v1/nowhere'), 404],
  ['absolute-form with a broken authority', get('http://[/v1/records'), 400],
  ['asterisk-form', 'OPTIONS * HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n', 400],
  ['a NUL in the target', get('/v1/re\0cords'), 400],
  ['a NUL in a header value', 'GET /v1/sidecars HTTP/1.1\r\nHost: collector\r\nX-A: a\0b\r\nConnection: close\r\n\r\n', 400],
  ['a query string of 100,000 bytes', get(`/v1/records?service=${'x'.repeat(100_000)}`), 431],
  ['10,000 parameters', get(`/v1/records?${'a=1&'.repeat(10_000)}`), 431],
  ['4,000 parameters within the header bound', get(`/v1/records?${'a&'.repeat(4000)}`), 400],
  ['an unknown parameter', get('/v1/records?drop=table'), 400],
  ['a negative limit', get('/v1/records?limit=-1'), 400],
  ['a limit past the maximum', get('/v1/records?limit=99999999999999999999'), 400],
  ['a time that is not one', get('/v1/records?since=yesterday'), 400],
  ['since after until', get('/v1/records?since=2030-01-01&until=2020-01-01'), 400],
  ['a status that is not one', get('/v1/records?status=7xx'), 400],
  ['an empty parameter', get('/v1/records?service='), 400],
  ['an identity that is not a SPIFFE ID', get('/v1/records?identity=orders'), 400],
  ['an identity longer than any the mesh proves (past an LMDB key)', get(`/v1/records?identity=spiffe://cluster.local/ns/a/sa/${'x'.repeat(4000)}`), 400],
  ['a POST with a body', 'POST /v1/records HTTP/1.1\r\nHost: collector\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello', 405],
  ['a request line that is not HTTP', 'HELLO\r\n\r\n', 400],
];

test.serial('every malformed target, bad parameter and oversize input gets a 4xx, and the collector keeps serving', async (t) => {
  const c = await startCollector(t);
  for (const [name, raw, status] of HOSTILE) {
    const answer = await rawExchange(c.port, raw);
    t.is(statusOf(answer), status, `${name}: ${answer.slice(0, 200)}`);
    await assertServing(t, c, name);
  }
});

test.serial('slow clients dribbling their headers do not hold up anyone else', async (t) => {
  const c = await startCollector(t);
  const slow: net.Socket[] = [];
  for (let i = 0; i < 100; i++) {
    const socket = net.connect(c.port, '127.0.0.1');
    socket.on('error', () => {});
    t.teardown(() => socket.destroy());
    socket.write('GET /v1/sidecars HTTP/1.1\r\nHost: collector\r\n');
    slow.push(socket);
  }
  const drip = setInterval(() => slow.forEach((s) => s.write('X-Slow: 1\r\n')), 100);
  t.teardown(() => clearInterval(drip));
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`${c.url}/v1/sidecars`);
    t.is(res.status, 200);
    await res.text();
  }
  clearInterval(drip);
  t.true(slow.every((s) => !s.destroyed), 'the slow clients are still connected: they were not what made room');
  await assertServing(t, c, 'slow clients');
});

interface Subscriber {
  /** The first bytes the collector sent. */
  head: string;
  socket: net.Socket;
  /** Everything it sent once the connection closed. */
  closed: Promise<string>;
}

/** Opens a /v1/tail subscription on a raw socket; resolves once its first bytes arrive. */
function subscribe(port: number): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let all = '';
    const closed = new Promise<string>((done) => socket.once('close', () => done(all)));
    socket.once('error', reject);
    socket.on('data', (chunk) => (all += chunk.toString('latin1')));
    socket.once('data', (chunk) => resolve({ head: chunk.toString('latin1'), socket, closed }));
    socket.write('GET /v1/tail HTTP/1.1\r\nHost: collector\r\n\r\n');
  });
}

/** n subscribers, opened 100 at a time (within the listen backlog, so none waits out a SYN retry). */
async function subscribeMany(t: ExecutionContext, port: number, n: number): Promise<Subscriber[]> {
  const subs: Subscriber[] = [];
  t.teardown(() => subs.forEach((s) => s.socket.destroy()));
  while (subs.length < n) subs.push(...(await Promise.all(Array.from({ length: Math.min(100, n - subs.length) }, () => subscribe(port)))));
  return subs;
}

test.serial('1,000 idle live-tail subscribers: 64 are served, the rest get 503 with a reason, and the collector keeps serving', async (t) => {
  const c = await startCollector(t);
  const subs = await subscribeMany(t, c.port, 1000);
  const served = subs.filter((s) => statusOf(s.head) === 200);
  const refused = subs.filter((s) => statusOf(s.head) === 503);
  t.is(served.length, 64, 'the default --max-tail-subscribers');
  t.is(refused.length, 936);
  t.true(served.every((s) => /text\/event-stream/.test(s.head)));
  t.regex(await refused[0].closed, /too many live-tail subscribers: at most 64 at once \(--max-tail-subscribers\)/);
  const metrics = await (await fetch(`${c.url}/metrics`)).text();
  t.is(metricValue(metrics, 'auditmesh_collector_tail_turned_away_total', { reason: 'at_capacity' }), 936);
  t.is(metricValue(metrics, 'auditmesh_collector_tail_subscribers'), 64);
  await assertServing(t, c, '1,000 tail subscribers');

  // Subscribers that leave make room again.
  served.forEach((s) => s.socket.destroy());
  await until(async () => metricValue(await (await fetch(`${c.url}/metrics`)).text(), 'auditmesh_collector_tail_subscribers') === 0, 'the subscribers are gone');
  const again = await subscribe(c.port);
  t.teardown(() => again.socket.destroy());
  t.is(statusOf(again.head), 200);
});

test.serial('--max-tail-subscribers sets the cap, and is checked at boot', async (t) => {
  const c = await startCollector(t, ['--max-tail-subscribers', '2']);
  const subs = await subscribeMany(t, c.port, 3);
  t.deepEqual(subs.map((s) => statusOf(s.head)).sort(), [200, 200, 503]);
  const bad = startCli(t, ['collector', '--insecure', '--max-tail-subscribers', '0']);
  const done = await bad.done;
  t.is(done.code, 2);
  t.regex(done.stderr, /--max-tail-subscribers: at least 1/);
});
