import test from 'ava';
import { dispatch } from '../control/cli/main.js';
import type { CommandIO } from '../command/io.js';
import type { CollectedRecord } from '../control/collector/api/record-query.js';
import { startTestCollector } from './helpers/collector.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';

// `auditmesh export --follow -o json` prints what the collector stores as NDJSON for log shippers;
// across a collector restart it reconnects and catches up, printing every record once.

function captured(): { io: CommandIO; out: () => string; err: () => string; stop: () => void } {
  let out = '';
  let err = '';
  const controller = new AbortController();
  return {
    io: { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, env: {}, signal: controller.signal },
    out: () => out,
    err: () => err,
    stop: () => controller.abort(),
  };
}

const printedIds = (text: string): string[] =>
  text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as CollectedRecord)
    .filter((r) => r['audit.kind'] === 'http')
    .map((r) => String(r['audit.request_id']));

test('export --follow prints every stored record once as NDJSON, across a collector restart (reconnects and catches up)', async (t) => {
  // --insecure: open reads, so the restarted collector takes the same (no) reader credential.
  const first = await startTestCollector(t, { token: null });
  const { send } = await startShippingSidecar(t, first.grpcAddress);
  const cli = captured();
  t.teardown(cli.stop);
  const running = dispatch(['export', '--follow', '--collector', first.httpUrl, '-o', 'json', ...first.readerArgs], cli.io);
  await eventually('the tail subscribed', () => first.liveListeners > 0);
  for (let i = 0; i < 10; i++) t.is(await send(`live-${i}`), 200);
  await eventually('10 records printed', () => printedIds(cli.out()).length >= 10);

  await first.close();
  // Sent while the collector is down: the sidecar keeps them and ships them to the next one.
  const during = Array.from({ length: 10 }, (_, i) => `during-${i}`);
  await Promise.all(during.map((id) => send(id)));
  await startTestCollector(t, { token: null, storeDir: first.storeDir, grpcPort: first.grpcPort, httpPort: first.httpPort });
  for (let i = 0; i < 5; i++) t.is(await send(`after-${i}`), 200);
  const wanted = [...Array.from({ length: 10 }, (_, i) => `live-${i}`), ...during, ...Array.from({ length: 5 }, (_, i) => `after-${i}`)];
  await eventually('every record printed', () => wanted.every((id) => printedIds(cli.out()).includes(id)), 60_000);
  const ids = printedIds(cli.out());
  t.is(ids.length, new Set(ids).size, 'no record printed twice');
  t.regex(cli.err(), /reconnecting/);
  cli.stop();
  t.is(await running, 0);
});

test('export with neither --follow nor --out, or --follow without --collector, is a usage error (exit 2), naming what to give', async (t) => {
  // Without --follow, export writes a bundle (export.ts): it needs --out.
  const a = captured();
  t.is(await dispatch(['export', '--collector', 'http://127.0.0.1:1'], a.io), 2);
  t.regex(a.err(), /--out FILE is required/);
  const b = captured();
  t.is(await dispatch(['export', '--follow'], b.io), 2);
  t.regex(b.err(), /give --collector URL/);
});
