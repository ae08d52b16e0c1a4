import test from 'ava';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { CLI, startProcess } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { loadOrCreateSecret } from '../ledger/keys.js';

// Key files (issue 22, item 10): created atomically (temp file, fsync, link into place, 0600), so
// a crash never leaves an empty key that stops every later start; a key path that cannot be used
// stops the sidecar with one line naming the flag, not a stack trace.

/** Runs `auditmesh sidecar` with the given key paths to its exit. */
function sidecarWith(t: ExecutionContext, dir: string, key: string, redactionKey: string) {
  const args = ['sidecar', '--app-port', '9', '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'journal'), '--key', key, '--redaction-key', redactionKey];
  return startProcess(t, process.execPath, [...CLI, ...args]).done;
}

const CASES: Array<[string, (dir: string) => Promise<{ key: string; redactionKey: string }>, RegExp]> = [
  [
    'an empty --key',
    async (dir) => (await writeFile(join(dir, 'sidecar.key'), ''), { key: join(dir, 'sidecar.key'), redactionKey: join(dir, 'redaction.key') }),
    /^auditmesh sidecar: cannot start: --key \S+sidecar\.key: the key file is empty; remove it and a new key is created at the next start$/,
  ],
  [
    'a --key that is a folder',
    async (dir) => (await mkdir(join(dir, 'keydir')), { key: join(dir, 'keydir'), redactionKey: join(dir, 'redaction.key') }),
    /^auditmesh sidecar: cannot start: --key \S+keydir: cannot read the key file \(EISDIR\)$/,
  ],
  [
    'an empty --redaction-key',
    async (dir) => (await writeFile(join(dir, 'redaction.key'), ''), { key: join(dir, 'sidecar.key'), redactionKey: join(dir, 'redaction.key') }),
    /^auditmesh sidecar: cannot start: --redaction-key \S+redaction\.key: the key file is empty; remove it/,
  ],
  [
    'a --redaction-key under a file',
    async (dir) => (await writeFile(join(dir, 'plain'), 'x'), { key: join(dir, 'sidecar.key'), redactionKey: join(dir, 'plain', 'redaction.key') }),
    /^auditmesh sidecar: cannot start: --redaction-key \S+plain\/redaction\.key: cannot read the key file \(ENOTDIR\)$/,
  ],
  [
    'a --key that is not a PEM key',
    async (dir) => (await writeFile(join(dir, 'sidecar.key'), 'not a key at all\n'), { key: join(dir, 'sidecar.key'), redactionKey: join(dir, 'redaction.key') }),
    /^auditmesh sidecar: cannot start: --key \S+sidecar\.key: the key file is not a PEM private key$/,
  ],
];

for (const [name, setup, said] of CASES) {
  test(`${name}: the sidecar exits 1 with one line naming the flag`, async (t) => {
    const dir = await tempDir(t);
    const { key, redactionKey } = await setup(dir);
    const done = await sidecarWith(t, dir, key, redactionKey);
    t.is(done.code, 1);
    const lines = done.stderr.split('\n').filter((l) => l !== '');
    t.is(lines.length, 1, done.stderr);
    t.regex(lines[0], said);
  });
}

test('a first start creates both keys whole, 0600, with no temp file left beside them', async (t) => {
  const dir = await tempDir(t);
  const sidecar = await startSidecarProcess(t, { appPort: 9, dir });
  await sidecar.stop();
  for (const name of ['sidecar.key', 'redaction.key']) {
    const s = await stat(join(dir, name));
    t.is(s.mode & 0o777, 0o600, name);
    t.true(s.size >= 32, `${name} holds ${s.size} bytes`);
  }
  t.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')), []);
});

test('processes creating the same secret at once all end up with the one key on disk', async (t) => {
  const path = join(await tempDir(t), 'keys', 'redaction.key');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSecret(path)));
  const onDisk = await loadOrCreateSecret(path);
  t.true(keys.every((k) => k.equals(onDisk)));
  t.deepEqual((await readdir(join(path, '..'))).sort(), ['redaction.key']);
});
