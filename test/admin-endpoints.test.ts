import test from 'ava';
import net from 'node:net';
import { request, startUpstream } from './helpers/net.js';
import { followTail, metricValue, scrape, startTestSidecar, until } from './helpers/sidecar.js';
import { seriesCounts } from './helpers/prom-text.js';

test('/livez and /readyz answer 200 on a healthy sidecar; unknown paths 404', async (t) => {
  const sidecar = await startTestSidecar(t);
  t.is((await request(sidecar.ports.admin, { path: '/livez' })).status, 200);
  const ready = await request(sidecar.ports.admin, { path: '/readyz' });
  t.is(ready.status, 200);
  t.is(ready.body.toString(), 'ready\n');
  t.is((await request(sidecar.ports.admin, { path: '/nope' })).status, 404);
});

test('/metrics counts requests by direction, method, status class and bounded peer', async (t) => {
  const app = await startUpstream((req, res) => {
    res.statusCode = req.url === '/missing' ? 404 : 200;
    res.end();
  });
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  for (let i = 0; i < 3; i++) await request(sidecar.ports.inbound!, { path: `/ok/${i}` });
  await request(sidecar.ports.inbound!, { path: '/missing' });
  await request(sidecar.ports.inbound!, { method: 'PURGE', path: '/cache' });
  const text = await scrape(sidecar.ports.admin);
  t.is(metricValue(text, 'auditmesh_requests_total', { direction: 'inbound', method: 'GET', status_class: '2xx', peer: 'unknown' }), 3);
  t.is(metricValue(text, 'auditmesh_requests_total', { method: 'GET', status_class: '4xx' }), 1);
  t.is(metricValue(text, 'auditmesh_requests_total', { method: '_OTHER' }), 1);
  t.is(metricValue(text, 'auditmesh_request_duration_seconds_count', { direction: 'inbound' }), 5);
  t.regex(text, /nodejs_eventloop_lag_seconds/);
  // The sidecar's own identity is on every series, process metrics included: dashboards group by it.
  const samples = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  t.deepEqual(samples.filter((l) => !l.includes('service="svc"')), []);
  // No raw path reaches a label.
  t.false(text.includes('/ok/1'));
});

test('peer labels stay bounded when clients invent thousands of service names', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  await Promise.all(Array.from({ length: 400 }, (_, i) => request(sidecar.ports.inbound!, { path: `/p/${i}`, headers: { 'x-auditmesh-client': `svc-${i}` }, agent })));
  const text = await scrape(sidecar.ports.admin);
  const series = text.split('\n').filter((l) => l.startsWith('auditmesh_requests_total{'));
  t.true(series.length <= 201, `${series.length} series`);
  t.true(series.some((l) => l.includes('peer="other"')));
});

test('client TCP connections are counted per listener as opened, closed and active', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const sockets = await Promise.all(
    Array.from({ length: 3 }, () => new Promise<net.Socket>((resolve) => { const s = net.connect(sidecar.ports.inbound!, '127.0.0.1', () => resolve(s)); })),
  );
  const count = async (): Promise<number[]> => {
    const text = await scrape(sidecar.ports.admin);
    return ['auditmesh_tcp_connections_opened_total', 'auditmesh_tcp_connections_closed_total', 'auditmesh_tcp_connections_active'].map((name) => metricValue(text, name, { direction: 'inbound' }));
  };
  await until(async () => (await count())[0] === 3, 'three connections opened');
  t.deepEqual(await count(), [3, 0, 3]);
  for (const s of sockets) s.destroy();
  await until(async () => (await count())[1] === 3, 'three connections closed');
  t.deepEqual(await count(), [3, 3, 0]);
  t.is(metricValue(await scrape(sidecar.ports.admin), 'auditmesh_tcp_connections_opened_total', { direction: 'outbound' }), 0);
});

test('--request-metrics off: exchanges are neither counted nor timed, while the journal still records them', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, requestMetrics: false });
  const tail = await followTail(t, sidecar.ports.admin);
  t.is((await request(sidecar.ports.inbound!, { path: '/counted-nowhere' })).status, 200);
  await tail.next((r) => r['url.path'] === '/counted-nowhere');
  const text = await scrape(sidecar.ports.admin);
  t.is(seriesCounts(text).get('auditmesh_requests_total'), undefined);
  t.is(seriesCounts(text).get('auditmesh_proxy_overhead_seconds_count'), undefined);
  t.true(metricValue(text, 'auditmesh_journal_records_total', { result: 'written' }) >= 1);
});
