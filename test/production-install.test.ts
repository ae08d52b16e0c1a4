import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './helpers/child.js';
import { parseDockerfile } from './helpers/dockerfile.js';
import { CLEAN_ENV, listeningLine, runFromImage, startFromImage } from './helpers/image-process.js';
import { startUpstream } from './helpers/net.js';
import { productionImage, type ProductionImage } from './helpers/production-image.js';
import { tempDir } from './helpers/sidecar.js';

// Every command here runs from the image's files as deploy/Dockerfile assembles them, with
// devDependencies pruned: what `docker run auditmesh/auditmesh ARGS` runs.

async function ready(url: string): Promise<number> {
  return (await fetch(url)).status;
}

/** Starts the sidecar from the image with every port 0; resolves once it listens (rejects if it dies first). */
async function startSidecar(t: ExecutionContext, image: ProductionImage, dir: string, args: string[] = []) {
  const app = await startUpstream((_req, res) => res.end('served'));
  t.teardown(app.close);
  const running = startFromImage(t, image, ['sidecar', '--app-port', String(app.port), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'journal'), '--key', join(dir, 'sidecar.key'), '--redaction-key', join(dir, 'redaction.key'), ...args]);
  const line = await listeningLine(running, 'sidecar listening');
  return { running, admin: line.admin as number, inbound: line.inbound as number };
}

test('the Dockerfile is the one list of image paths: its stages are reproduced from it, and the image has no devDependency', async (t) => {
  const stages = parseDockerfile();
  t.true(stages.length >= 2);
  const image = await productionImage();
  t.deepEqual(image.entrypoint, ['node', '/opt/auditmesh/bin/auditmesh.js']);
  // What the pruned node_modules must not hold: the test runner, the compiler, the tsx loader.
  for (const dev of ['ava', 'tsx', 'typescript', 'eslint']) {
    const probe = spawnSync('node', ['--input-type=module', '-e', `await import(${JSON.stringify(dev)})`], { cwd: image.dir, encoding: 'utf8', env: CLEAN_ENV });
    t.not(probe.status, 0, `${dev} is still installed in the image`);
    t.regex(probe.stderr, /ERR_MODULE_NOT_FOUND/);
  }
  // ... while what the commands import at run time is there.
  const runtime = spawnSync('node', ['--input-type=module', '-e', "await import('undici'); await import('jose')"], { cwd: image.dir, encoding: 'utf8', env: CLEAN_ENV });
  t.is(runtime.status, 0, runtime.stderr);
});

test('every command of the pruned image answers --help with exit 0', async (t) => {
  const image = await productionImage();
  const usage = await runFromImage(t, image, ['--help']);
  t.is(usage.code, 0, usage.stderr);
  const commands = [...usage.stdout.split('Commands:\n')[1]!.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!);
  t.true(commands.length >= 9, usage.stdout);
  const results = await Promise.all(commands.map((c) => runFromImage(t, image, [c, '--help'])));
  commands.forEach((c, i) => {
    t.is(results[i]!.code, 0, `${c} --help: ${results[i]!.stderr}`);
    t.regex(results[i]!.stdout, new RegExp(`Usage: auditmesh ${c}`));
  });
});

test('from the pruned image the sidecar (both engines), collector and injector start and answer /readyz; the sidecar ships to the collector and verify passes on both', async (t) => {
  const image = await productionImage();
  const dir = await tempDir(t);
  const tokens = join(dir, 'tokens');
  await writeFile(tokens, 'shared-token\n');
  const readers = join(dir, 'readers');
  await writeFile(readers, 'reader-token *\n');
  const collector = startFromImage(t, image, ['collector', '--grpc-port', '0', '--http-port', '0', '--store', join(dir, 'store'), '--token-file', tokens, '--reader-token-file', readers]);
  const c = await listeningLine(collector, 'collector listening');
  t.is(await ready(`${c.http as string}/readyz`), 200);

  const sidecar = await startSidecar(t, image, join(dir, 'undici'), ['--collector', c.grpc as string, '--collector-token-file', tokens, '--service', 'billing', '--checkpoint-interval-ms', '200']);
  t.is(await ready(`http://127.0.0.1:${sidecar.admin}/readyz`), 200);
  t.is((await fetch(`http://127.0.0.1:${sidecar.inbound}/invoice/1`)).status, 200);
  const legacy = await startSidecar(t, image, join(dir, 'http-proxy'), ['--forward-engine', 'http-proxy']);
  t.is(await ready(`http://127.0.0.1:${legacy.admin}/readyz`), 200);

  const injector = startFromImage(t, image, ['injector', '--port', '0', '--admin-port', '0', '--bind', '127.0.0.1', '--tls-cert', join(ROOT, 'test/fixtures/tls-cert.pem'), '--tls-key', join(ROOT, 'test/fixtures/tls-key.pem')]);
  const i = await listeningLine(injector, 'injector listening');
  t.is(await ready(`http://127.0.0.1:${i.admin as number}/readyz`), 200);

  // The record reaches the collector before anything stops.
  let stored = '';
  for (const deadline = Date.now() + 20_000; Date.now() < deadline && !stored.includes('/invoice/1'); ) {
    stored = await (await fetch(`${c.http as string}/v1/records?service=billing`, { headers: { authorization: 'Bearer reader-token' } })).text();
    if (!stored.includes('/invoice/1')) await new Promise((r) => setTimeout(r, 100));
  }
  t.regex(stored, /\/invoice\/1/);
  for (const p of [sidecar.running, legacy.running, injector, collector]) p.child.kill('SIGTERM');
  for (const p of [sidecar.running, legacy.running, injector, collector]) t.is((await p.done).code, 0, (await p.done).stderr);

  const journal = await runFromImage(t, image, ['verify', join(dir, 'undici', 'journal')]);
  t.is(journal.code, 0, journal.stdout + journal.stderr);
  const store = await runFromImage(t, image, ['verify', join(dir, 'store')]);
  t.is(store.code, 0, store.stdout + store.stderr);
});

test('the manifests render from the pruned image: install and inject -f exit 0 with YAML', async (t) => {
  const image = await productionImage();
  const install = await runFromImage(t, image, ['install', '--certs', 'self-signed']);
  t.is(install.code, 0, install.stderr);
  t.regex(install.stdout, /kind: MutatingWebhookConfiguration/);
  const inject = await runFromImage(t, image, ['inject', '-f', join(ROOT, 'test/fixtures/manifests/shop.yaml')]);
  t.is(inject.code, 0, inject.stderr);
  t.regex(inject.stdout, /name: auditmesh-proxy/);
});

test('a runtime dependency placed in devDependencies is caught: the pruned sidecar dies with ERR_MODULE_NOT_FOUND instead of answering', async (t) => {
  // undici as it was before it moved to dependencies: the same check as above must fail.
  const image = await productionImage({
    packageJson: (pkg) => {
      const { undici, ...dependencies } = pkg.dependencies as Record<string, string>;
      return { ...pkg, dependencies, devDependencies: { ...(pkg.devDependencies as Record<string, string>), undici } };
    },
  });
  const err = await t.throwsAsync(startSidecar(t, image, await tempDir(t)));
  t.regex(err.message, /exited 1 before "sidecar listening"/);
  t.regex(err.message, /ERR_MODULE_NOT_FOUND|Cannot find package 'undici'/);
});
