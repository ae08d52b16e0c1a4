import test from 'ava';
import http from 'node:http';
import { sidecarConfig } from '../proxy/config.js';
import { createDeadlineSweep, sweepTickMs, type Swept } from '../proxy/http1/deadline-sweep.js';
import { createHttpProxyForwarder } from '../proxy/http1/http-proxy-forwarder.js';
import type { ForwardOutcome } from '../proxy/http1/forwarder.js';
import { closeServer, listen, request } from './helpers/net.js';

/**
 * The http-proxy engine's deadlines are one sweep over the exchanges in flight. A finished
 * exchange must leave it at once: held until the next tick, every exchange (request, response,
 * upstream request) outlived a young-generation GC and was copied to the old generation, which
 * under load cost more CPU than the forwarding itself.
 */
test('a finished exchange leaves the deadline sweep when it ends, not at the next tick', async (t) => {
  const app = http.createServer((req, res) => {
    if (req.url === '/hang') return; // answered by the response timeout
    res.end('ok');
  });
  const appPort = await listen(app);
  t.teardown(() => closeServer(app));

  const config = sidecarConfig({ responseTimeoutMs: 400 });
  const sweep = createDeadlineSweep(sweepTickMs(config.responseTimeoutMs, config.idleTimeoutMs));
  const forwarder = createHttpProxyForwarder(config, sweep);
  t.teardown(() => forwarder.close());
  const inSweepWhenDone: number[] = [];
  const outcomes: ForwardOutcome[] = [];
  const front = http.createServer((req, res) => {
    forwarder.web(req, res, { host: '127.0.0.1', port: appPort }, {}, (outcome) => {
      inSweepWhenDone.push(sweep.size);
      outcomes.push(outcome);
    });
  });
  const frontPort = await listen(front);
  t.teardown(() => closeServer(front));

  // Concurrent requests: each must be gone from the sweep by the time it is reported.
  const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => request(frontPort, { path: `/ok/${i}` })));
  t.deepEqual(replies.map((r) => r.status), Array(8).fill(200));
  t.deepEqual(outcomes.map((o) => o.status), Array(8).fill(200));
  // Reported one by one as each ends: at most the others still running remain.
  for (const [i, size] of inSweepWhenDone.entries()) t.true(size <= 7 - i, `exchange ${i} reported with ${size} in the sweep`);
  t.is(sweep.size, 0);

  // The sweep still enforces the deadlines of what is in flight.
  const hung = await request(frontPort, { path: '/hang' });
  t.is(hung.status, 504);
  t.is(outcomes.at(-1)?.errorKind, 'timeout');
  t.is(sweep.size, 0);
});

/**
 * The sweep links its items through their own fields. What the GC needs: an item that left
 * holds no link to any other (a dead exchange must not keep later ones alive through a young
 * GC, see deadline-sweep.ts); what the deadlines need: a check that ends its own item or
 * another one mid-tick leaves every other item still checked.
 */
test('the sweep: items that leave, mid-tick or not, keep no link to the others, and the rest are still checked', async (t) => {
  const sweep = createDeadlineSweep(10);
  t.teardown(() => sweep.close());
  const checked = new Map<string, number>();
  const item = (name: string, onCheck: () => boolean = () => true): Swept & { name: string } => ({
    name,
    sweepPrev: null,
    sweepNext: null,
    check() {
      checked.set(name, (checked.get(name) ?? 0) + 1);
      return onCheck();
    },
  });
  const [a, c, d] = [item('a'), item('c'), item('d')];
  // b ends d from inside its own check (as an exchange's failure can end another), and is done itself.
  const b = item('b', () => {
    sweep.delete(d);
    return false;
  });
  const e = item('e', () => false);
  for (const x of [a, b, c, d, e]) sweep.add(x);
  sweep.add(a);
  t.is(sweep.size, 5, 'adding an item again does not count it twice');
  sweep.delete(c);
  t.is(sweep.size, 4);
  while ((checked.get('a') ?? 0) < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  t.is(sweep.size, 1, 'b and e left when their checks said so, d when b ended it');
  t.is(checked.get('b'), 1);
  t.is(checked.get('e'), 1);
  t.false(checked.has('c'), 'deleted before the first tick: never checked');
  t.false(checked.has('d'), 'ended by an earlier check in the same tick: not checked');
  for (const x of [b, c, d, e]) t.deepEqual([x.sweepPrev, x.sweepNext], [null, null], `${x.name} holds no link`);
  t.not(a.sweepNext, null);
  sweep.close();
  t.is(sweep.size, 0);
  t.deepEqual([a.sweepPrev, a.sweepNext], [null, null], 'close unlinks what was left');
  const ticks = checked.get('a');
  await new Promise((resolve) => setTimeout(resolve, 40));
  t.is(checked.get('a'), ticks, 'no tick after close');
});
