import test from 'ava';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GROUND_FLOOR, importCircles, importGraph, layerViolations } from './helpers/import-graph.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SOURCE_FOLDERS = [...GROUND_FLOOR, 'proxy', 'control', 'bench', 'test', 'deploy'];
const tracked = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '--', ...SOURCE_FOLDERS], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
const graph = importGraph(ROOT, tracked);

test('the sidecar never imports the control plane, the control plane only the sidecar entry point, the ground floor neither', (t) => {
  t.true(graph.size > 100, `read ${graph.size} files`);
  t.deepEqual(layerViolations(graph), []);
});

test('no module imports itself back through others, type-only imports included', (t) => {
  t.deepEqual(importCircles(graph), []);
});

test('the check names each kind of wrong arrow and every circle', (t) => {
  const wrong = new Map([
    ['proxy/ship/shipper.ts', ['control/cli/io.ts', 'wire/sync-wire.ts']],
    ['control/cli/demo.ts', ['proxy/sidecar.ts', 'proxy/main.ts', 'ledger/record.ts']],
    ['ledger/chain.ts', ['proxy/keys.ts']],
    ['wire/sync-wire.ts', ['control/collector/collector.ts']],
    ['a.ts', ['b.ts']],
    ['b.ts', ['c.ts']],
    ['c.ts', ['a.ts']],
    ['d.ts', ['d.ts']],
  ]);
  t.deepEqual(layerViolations(wrong), [
    'proxy/ship/shipper.ts -> control/cli/io.ts: the sidecar imports the control plane',
    'control/cli/demo.ts -> proxy/sidecar.ts: the control plane imports a sidecar internal (only proxy/main.ts may be)',
    'ledger/chain.ts -> proxy/keys.ts: the ground floor imports proxy/',
    'wire/sync-wire.ts -> control/collector/collector.ts: the ground floor imports control/',
  ]);
  t.deepEqual(importCircles(wrong), [['a.ts', 'b.ts', 'c.ts'], ['d.ts']]);
});
