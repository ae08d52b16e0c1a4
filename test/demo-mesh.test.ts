import test from 'ava';
import { runCli, startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

test('auditmesh demo drives service-to-service traffic and prints both sidecars’ records live', async (t) => {
  const dir = await tempDir(t);
  const r = await runCli(['demo', '--dir', dir, '--duration', '3', '--rate', '10', '-o', 'json'], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  const records = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const edge = (from: string, to: string, dir2: string): unknown[] =>
    records.filter((x) => x['audit.direction'] === dir2 && (dir2 === 'outbound' ? x['audit.service'] === from && x['peer.service'] === to : x['audit.service'] === to && x['peer.service'] === from));
  t.true(edge('frontend', 'inventory', 'outbound').length >= 2, 'frontend → inventory recorded by frontend’s sidecar');
  t.true(edge('frontend', 'inventory', 'inbound').length >= 2, 'frontend → inventory recorded by inventory’s sidecar');
  t.true(records.some((x) => x['audit.service'] === 'frontend' && x['audit.direction'] === 'inbound'), 'client → frontend');
  const grpcHop = records.filter((x) => x['audit.kind'] === 'grpc' && x['rpc.service'] === 'demo.Pricing' && x['rpc.method'] === 'Quote');
  t.true(grpcHop.some((x) => x['audit.service'] === 'inventory' && x['audit.direction'] === 'outbound' && x['peer.service'] === 'pricing'), 'inventory → pricing (gRPC) by inventory’s sidecar');
  t.true(grpcHop.some((x) => x['audit.service'] === 'pricing' && x['audit.direction'] === 'inbound' && x['peer.service'] === 'inventory'), 'inventory → pricing (gRPC) by pricing’s sidecar');
  // One checkout is one trace across all three hops.
  const trace = grpcHop[0]!['trace.id'];
  t.true(records.filter((x) => x['trace.id'] === trace).length >= 5);
  // The client's bearer token is a fingerprint in the record.
  t.false(r.stdout.includes('demo-secret-token'));
});

test('auditmesh demo stops cleanly on SIGINT', async (t) => {
  const dir = await tempDir(t);
  const demo = startCli(t, ['demo', '--dir', dir]);
  await demo.waitFor(/frontend → inventory/);
  demo.child.kill('SIGINT');
  const exit = await demo.done;
  t.is(exit.code, 0, exit.stderr);
  t.regex(exit.stdout, /auditmesh demo: stopped; journals kept in/);
});
