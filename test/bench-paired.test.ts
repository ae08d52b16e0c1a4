// The paired benchmark (bench/paired.ts), run with one short pair, so the harness cannot rot
// unnoticed. No speed is asserted: only that both paths were loaded and the target line is judged
// from the ratio it prints.
import test from 'ava';
import { startProcess } from './helpers/child.js';

test('bench:paired loads both paths in alternating slices and judges the target from their ratio', async (t) => {
  t.timeout(180_000);
  const env = { ...process.env, PAIRS: '2', SLICE: '0.5', SERVERS_FROM: 'source', PAIRED: 'http-proxy,sidecar-async' };
  const { code, stdout, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/paired.ts'], env).done;
  t.is(code, 0, stderr);
  t.regex(stderr, /pair 1: http-proxy \d+ req\/s, sidecar-async \d+ req\/s, ratio [\d.]+\npair 2: /);
  const rps = [...stdout.matchAll(/^(http-proxy|sidecar-async): median (\d+) req\/s/gm)].map((m) => [m[1], Number(m[2])] as const);
  t.deepEqual(rps.map(([path]) => path), ['http-proxy', 'sidecar-async']);
  for (const [path, n] of rps) t.true(n > 0, `${path} served nothing`);
  const line = /^sidecar-async vs http-proxy, throughput pair by pair \(2 pairs of 0\.5 s\): median ([\d.]+)x \(min [\d.]+, max [\d.]+\) \(target >= 0\.9x\): (met|MISSED)/m.exec(stdout);
  t.truthy(line, stdout);
  // Printed to two decimals: at exactly 0.90 either verdict can be right.
  if (Number(line![1]) !== 0.9) t.is(line![2], Number(line![1]) >= 0.9 ? 'met' : 'MISSED');
});

test('bench:paired refuses a kind it does not know, naming the ones it does', async (t) => {
  const env = { ...process.env, PAIRED: 'http-proxy,nginx' };
  const { code, stderr } = await startProcess(t, process.execPath, ['--import=tsx', 'bench/paired.ts'], env).done;
  t.not(code, 0);
  t.regex(stderr, /PAIRED: nginx is not a server kind \(http-proxy, undici, sidecar-off/);
});
