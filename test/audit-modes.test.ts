import test from 'ava';
import http from 'node:http';
import { request, startUpstream } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';
import type { Sidecar } from '../proxy/sidecar.js';
import { readJournal } from '../ledger/read-journal.js';

test('strict: the upstream sees a request only after its request record is durable in the journal', async (t) => {
  const running: { sidecar?: Sidecar } = {};
  const durableWhenSeen: boolean[] = [];
  const app = await startUpstream((req, res) => {
    const id = req.headers['x-request-id'];
    const journal = running.sidecar!.audit!.read();
    durableWhenSeen.push(journal.some((r) => r['audit.phase'] === 'request' && r['audit.request_id'] === id));
    res.end('ok');
  });
  t.teardown(app.close);
  const sidecar = (running.sidecar = await startTestSidecar(t, { appPort: app.port, auditMode: 'strict' }));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  t.teardown(() => agent.destroy());
  const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => request(sidecar.ports.inbound!, { path: `/strict/${i}`, agent })));
  t.true(replies.every((r) => r.status === 200));
  t.is(durableWhenSeen.length, 60);
  t.true(durableWhenSeen.every(Boolean));
});

test('strict: each exchange leaves a request record and a final record with the same request id', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, auditMode: 'strict' });
  const tail = await followTail(t, sidecar.ports.admin);
  await request(sidecar.ports.inbound!, { path: '/pair', headers: { 'x-request-id': 'pair-1' } });
  const first = await tail.next((r) => r['audit.request_id'] === 'pair-1' && r['audit.phase'] === 'request');
  const final = await tail.next((r) => r['audit.request_id'] === 'pair-1' && r['audit.phase'] === 'final');
  t.true(first['audit.seq'] < final['audit.seq']);
  t.is(final['http.response.status_code'], 200);
});

test('async: every exchange under load gets exactly one record, none lost', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, auditMode: 'async' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  t.teardown(() => agent.destroy());
  const N = 2000;
  await Promise.all(
    Array.from({ length: 32 }, async (_, worker) => {
      for (let i = worker; i < N; i += 32) await request(sidecar.ports.inbound!, { path: '/load', headers: { 'x-request-id': `load-${i}` }, agent });
    }),
  );
  await sidecar.close();
  const records = (await readJournal(sidecar.config.journalDir)).filter((r) => r['url.path'] === '/load');
  t.is(records.length, N);
  t.is(new Set(records.map((r) => r['audit.request_id'])).size, N, 'one record per exchange');
});

// The 100 ms commit bound itself is measured by the benchmark (bench/), not asserted here: on a
// shared 2-core CI machine a timed assertion would be a flaky test. What must hold everywhere
// is that the batch timer commits a lone record with no further traffic to fill the batch.
test('async: a lone record is committed by the batch timer, without further traffic', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  await request(sidecar.ports.inbound!, { path: '/lone' });
  const rec = await tail.next((r) => r['url.path'] === '/lone', 2000);
  t.is(rec['audit.seq'], 1);
});

test('off: proxies without writing records', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, auditMode: 'off' });
  t.is((await request(sidecar.ports.inbound!)).status, 200);
  t.is(sidecar.audit, null);
  t.is((await request(sidecar.ports.admin, { path: '/tail' })).status, 404);
});
