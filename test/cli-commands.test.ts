import test from 'ava';
import { join } from 'node:path';
import { request, startUpstream } from './helpers/net.js';
import { runBuiltCli, runCli, startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';
import { readFileSync } from 'node:fs';
import { VERSION } from '../command/version.js';

test('the built CLI (npx auditmesh) prints help and exits 0; no command exits 2', async (t) => {
  const help = await runBuiltCli(['--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Usage: auditmesh <command>/);
  t.regex(help.stdout, /sidecar/);
  t.is((await runBuiltCli([])).code, 2);
});

test('an unknown command or a bad flag is a usage error: exit 2 and a message naming it', async (t) => {
  const unknown = await runCli(['frobnicate']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "frobnicate"/);
  const badFlag = await runCli(['sidecar', '--inbound-port', 'eighty']);
  t.is(badFlag.code, 2);
  t.regex(badFlag.stderr, /--inbound-port: expected a whole number/);
  const badEnv = await runCli(['sidecar'], { env: { AUDITMESH_AUDIT_MODE: 'sometimes' } });
  t.is(badEnv.code, 2);
  t.regex(badEnv.stderr, /AUDITMESH_AUDIT_MODE: expected one of async, strict, off/);
});

test('every command answers --help with exit 0', async (t) => {
  const commands = ['sidecar', 'tail', 'demo', 'injector', 'install', 'inject', 'verify'];
  const results = await Promise.all(commands.map((command) => runCli([command, '--help'])));
  commands.forEach((command, i) => {
    t.is(results[i]!.code, 0, command);
    t.regex(results[i]!.stdout, new RegExp(`Usage: auditmesh ${command}`));
  });
});

test('auditmesh sidecar runs from flags and env, and auditmesh tail -o json prints its records', async (t) => {
  const app = await startUpstream((_req, res) => res.end('served'));
  t.teardown(app.close);
  const dir = await tempDir(t);
  const sidecar = startCli(t, ['sidecar', '--app-port', String(app.port), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'j'), '--key', join(dir, 'k'), '--redaction-key', join(dir, 'rk'), '--service', 'billing']);
  // Generous: the whole suite shares two cores, and a cold tsx start of the sidecar is the slowest thing in it.
  const listening = await sidecar.waitFor(/"msg":"sidecar listening".*"inbound":(\d+),"outbound":\d+,"admin":(\d+)/, 45_000);
  const [inbound, admin] = [Number(listening[1]), Number(listening[2])];

  const tail = startCli(t, ['tail', '--admin', `http://127.0.0.1:${admin}`, '-o', 'json']);
  // The tail connects asynchronously: keep sending until a record shows up.
  let line: RegExpMatchArray | undefined;
  const deadline = Date.now() + 45_000;
  for (let i = 0; Date.now() < deadline && line === undefined; i++) {
    t.is((await request(inbound, { path: `/invoice/${i}` })).status, 200);
    line = await tail.waitFor(/^\{.*"url\.path":"\/invoice\/\d+".*\}$/m, 200).catch(() => undefined);
  }
  t.truthy(line, tail.output().stdout);
  const rec = JSON.parse(line![0]);
  t.is(rec['audit.service'], 'billing');
  t.is(rec['http.response.status_code'], 200);

  sidecar.child.kill('SIGTERM');
  const exit = await sidecar.done;
  t.is(exit.code, 0, exit.stderr);
  t.regex(exit.stderr, /stopping/);
});

test('auditmesh tail against nothing listening fails with exit 1 and says why', async (t) => {
  const r = await runCli(['tail', '--admin', 'http://127.0.0.1:1']);
  t.is(r.code, 1);
  t.regex(r.stderr, /cannot reach http:\/\/127\.0\.0\.1:1/);
});

test('the version the CLI prints and stamps on injected pods is package.json\'s', async (t) => {
  t.is(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version, VERSION);
  t.is((await runBuiltCli(['--version'])).stdout, `auditmesh ${VERSION}\n`);
});
