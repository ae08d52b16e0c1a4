import test from 'ava';
import { join } from 'node:path';
import { runCli, startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

interface Rec {
  [key: string]: unknown;
}

test('auditmesh demo drives service-to-service traffic (HTTP and gRPC) and prints every sidecar’s records as the collector stores them', async (t) => {
  const dir = await tempDir(t);
  const demo = startCli(t, ['demo', '--dir', dir, '--rate', '10', '-o', 'json']);
  // Each edge, as seen by both of its sidecars, shows up in the live output.
  const edge = (service: string, direction: string, peer: string, kind: string): RegExp =>
    new RegExp(`^\\{(?=.*"audit\\.kind":"${kind}")(?=.*"audit\\.direction":"${direction}")(?=.*"audit\\.service":"${service}")(?=.*"peer\\.service":"${peer}").*\\}$`, 'm');
  await demo.waitFor(edge('frontend', 'outbound', 'inventory', 'http'));
  await demo.waitFor(edge('inventory', 'inbound', 'frontend', 'http'));
  await demo.waitFor(edge('inventory', 'outbound', 'pricing', 'grpc'));
  await demo.waitFor(edge('pricing', 'inbound', 'inventory', 'grpc'));
  await demo.waitFor(edge('frontend', 'inbound', 'unknown', 'http'));
  // Each sidecar ships on its own, the outermost hop's last: wait for every hop of the first gRPC
  // hop's checkout before stopping (a loaded run stopped between them). A hop that never comes fails here.
  const [grpcLine] = await demo.waitFor(/^\{(?=.*"rpc\.service":"demo\.Pricing")(?=.*"rpc\.method":"Quote").*\}$/m);
  const firstTrace = String((JSON.parse(grpcLine) as Rec)['trace.id']);
  for (const [service, direction] of [['frontend', 'inbound'], ['frontend', 'outbound'], ['inventory', 'inbound'], ['inventory', 'outbound'], ['pricing', 'inbound']]) {
    await demo.waitFor(new RegExp(`^\\{(?=.*"audit\\.service":"${service}")(?=.*"audit\\.direction":"${direction}")(?=.*"trace\\.id":"${firstTrace}").*\\}$`, 'm'));
  }
  demo.child.kill('SIGINT');
  const exit = await demo.done;
  t.is(exit.code, 0, exit.stderr);
  const records = exit.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Rec);
  const grpcHop = records.filter((x) => x['rpc.service'] === 'demo.Pricing' && x['rpc.method'] === 'Quote');
  t.true(grpcHop.length >= 2);
  // One checkout is one trace across all three hops, as both sidecars of each hop saw it.
  const trace = grpcHop[0]!['trace.id'];
  const hops = new Set(records.filter((x) => x['trace.id'] === trace).map((x) => `${x['audit.service']}:${x['audit.direction']}`));
  for (const hop of ['frontend:inbound', 'frontend:outbound', 'inventory:inbound', 'inventory:outbound', 'pricing:inbound']) t.true(hops.has(hop), `${hop} in trace ${trace}`);
  // The client's bearer token is a fingerprint in the record.
  t.false(exit.stdout.includes('demo-secret-token'));
  // Printed from the collector's tail: every record came through its store, from all three sidecars.
  t.deepEqual([...new Set(records.map((x) => String(x['audit.service'])))].sort(), ['frontend', 'inventory', 'pricing']);
  t.regex(exit.stderr, /collector store verified: \d+ records of 3 sidecars, every chain end to end/);
  // The store is there to check again, with the command users have.
  const verify = await runCli(['verify', join(dir, 'collector')]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
});

test('auditmesh demo stops cleanly on SIGINT, and --duration stops it by itself', async (t) => {
  const dir = await tempDir(t);
  const demo = startCli(t, ['demo', '--dir', dir]);
  await demo.waitFor(/frontend → inventory/);
  demo.child.kill('SIGINT');
  const exit = await demo.done;
  t.is(exit.code, 0, exit.stderr);
  t.regex(exit.stdout, /auditmesh demo: stopped; journals kept in/);
  t.regex(exit.stdout, /^ok +frontend .* records in \d+ links/m);
  t.regex(exit.stdout, /collector store verified: \d+ records of 3 sidecars/);
  const timed = startCli(t, ['demo', '--dir', dir, '--duration', '1']);
  const timedExit = await timed.done;
  t.is(timedExit.code, 0, timedExit.stderr);
  t.regex(timedExit.stdout, /auditmesh demo: stopped/);
});
