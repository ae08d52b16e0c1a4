// The mesh mTLS benchmark (bench/mesh-tls.ts), run as a short smoke run, so the harness cannot rot
// unnoticed. No speed is asserted: only that both pairs of sidecars were loaded, that the mTLS pair
// really was mTLS (the benchmark checks it from the callee's records and refuses to go on
// otherwise), and that both targets are judged from the numbers it prints.
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startProcess } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

test('bench:mesh-tls loads the plaintext and the mTLS pair in turn and judges both targets from what it prints', async (t) => {
  t.timeout(180_000);
  const jsonOut = join(await tempDir(t), 'mesh-tls.json');
  const env = { ...process.env, QUICK: '1', DURATION: '0.5', CONNECTIONS: '10', RATE: '100', SERVERS_FROM: 'source', JSON_OUT: jsonOut };
  const { code, stdout, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/mesh-tls.ts'], env).done;
  t.is(code, 0, stderr);
  t.regex(stderr, /load average [\d.]+, [\d.]+, [\d.]+ at the start/);
  t.regex(stderr, /^pair 1: plain \d+ req\/s, mtls \d+ req\/s, CPU \d+ \/ \d+ µs a request \([\d.]+x\), p50 [\d.]+ \/ [\d.]+ ms$/m);
  const rows = [...stdout.matchAll(/^(plain|mtls) +\| (\d+) \(\d+\.\.\d+\) \| (\d+) \(\d+\.\.\d+\) \((\d+) \+ (\d+)\) \| ([\d.]+) \([\d.]+\.\.[\d.]+\) \| ([\d.]+) .* \| (\d+) \| (\d+)$/gm)];
  t.deepEqual(rows.map((m) => m[1]), ['plain', 'mtls'], stdout);
  for (const m of rows) {
    t.true(Number(m[2]) > 0, `${m[1]} served nothing`);
    t.true(Number(m[3]) > 0 && Number(m[4]) > 0 && Number(m[5]) > 0, `${m[1]}: no CPU counted for a sidecar`);
    t.true(Number(m[6]) > 0, `${m[1]}: no p50`);
    t.is(m[8], '0', `${m[1]}: errors`);
  }
  const cpu = /^CPU per request mTLS\/plain: ([\d.]+)x \(pair by pair [\d.]+\.\.[\d.]+\), target <= 1\.15x: (met|MISSED)$/m.exec(stdout);
  t.truthy(cpu, stdout);
  // Printed to two decimals: at exactly 1.15 either verdict can be right.
  if (Number(cpu![1]) !== 1.15) t.is(cpu![2], Number(cpu![1]) <= 1.15 ? 'met' : 'MISSED');
  const p50 = /^p50 added: ([+-][\d.]+) ms \(pair by pair [+-][\d.]+\.\.[+-][\d.]+\), target <= \+0\.1 ms: (met|MISSED)$/m.exec(stdout);
  t.truthy(p50, stdout);
  if (Number(p50![1]) !== 0.1) t.is(p50![2], Number(p50![1]) <= 0.1 ? 'met' : 'MISSED');
  const json = JSON.parse(await readFile(jsonOut, 'utf8')) as { pairs: Array<Record<'plain' | 'mtls', { rps: number; cpuUs: number; p50Ms: number }>>; cpuRatios: number[]; p50AddedMs: number[] };
  t.is(json.pairs.length, 1);
  t.is(json.cpuRatios.length, 1);
  t.is(json.cpuRatios[0]!.toFixed(2), cpu![1]);
  t.is(json.pairs[0]!.mtls.p50Ms - json.pairs[0]!.plain.p50Ms, json.p50AddedMs[0]);
});

test('bench:mesh-tls refuses a knob that is not a positive number, naming it', async (t) => {
  const { code, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/mesh-tls.ts'], { ...process.env, PAIRS: 'two' }).done;
  t.not(code, 0);
  t.regex(stderr, /PAIRS: expected a positive integer, got "two"/);
});
