import test from 'ava';
import http from 'node:http';
import { sidecarConfig } from '../proxy/config.js';
import { createDeadlineSweep, sweepTickMs } from '../proxy/http1/deadline-sweep.js';
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
