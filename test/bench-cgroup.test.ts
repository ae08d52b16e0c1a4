// bench/cgroup.ts: memory read as Kubernetes reads it (working set = usage - inactive file), and
// the OOM killer's count, on cgroup v1 and v2 files; then a real cgroup where this machine has one.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import test from 'ava';
import { createMemoryCgroup, memoryOf, oomKillCount, statFields } from '../bench/cgroup.js';

const MIB = 2 ** 20;

test('v1: the working set is usage minus the subtree inactive file pages, anonymous memory is total_rss', (t) => {
  const stat = statFields(['cache 1', 'rss 2', 'inactive_file 3', 'total_cache 41943040', 'total_rss 62914560', 'total_inactive_file 31457280', ''].join('\n'));
  t.deepEqual(memoryOf(1, 104857600, stat), { usage: 100 * MIB, workingSet: 70 * MIB, anon: 60 * MIB, file: 40 * MIB });
});

test('v2: the working set is memory.current minus inactive_file, anonymous memory is anon', (t) => {
  const stat = statFields(['anon 62914560', 'file 41943040', 'inactive_file 31457280', 'active_file 10485760'].join('\n'));
  t.deepEqual(memoryOf(2, 104857600, stat), { usage: 100 * MIB, workingSet: 70 * MIB, anon: 60 * MIB, file: 40 * MIB });
});

test('the working set never reads below zero when inactive file pages exceed a stale usage', (t) => {
  t.is(memoryOf(2, 10, statFields('inactive_file 20')).workingSet, 0);
});

test('the OOM kill count is read from memory.oom_control (v1) and memory.events (v2)', (t) => {
  t.is(oomKillCount('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n'), 3);
  t.is(oomKillCount('low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n'), 2);
  t.is(oomKillCount('oom_kill_disable 0\nunder_oom 0\n'), 0);
});

test('a process over its cgroup limit is killed and counted; one under it is measured and is not', async (t) => {
  const cgroup = createMemoryCgroup(`auditmesh-test-${process.pid}`, 64 * MIB);
  if ('error' in cgroup) {
    // Without root or a delegated cgroup, the reason must say what is missing.
    t.regex(cgroup.error, /cgroup/);
    return;
  }
  t.teardown(() => cgroup.remove());
  const run = async (mib: number): Promise<string | null> => {
    const [command, ...args] = cgroup.wrap([process.execPath, '-e', `const keep = []; for (let i = 0; i < ${mib}; i++) keep.push(Buffer.alloc(${MIB}, 1)); process.stdout.write(String(keep.length));`]);
    const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    const [, signal] = (await once(child, 'exit')) as [number | null, string | null];
    return signal;
  };
  t.is(await run(16), null);
  t.is(cgroup.oomKills(), 0);
  t.is(await run(200), 'SIGKILL');
  t.is(cgroup.oomKills(), 1);
  const m = cgroup.read();
  t.true(m !== null && m.usage >= 0 && m.workingSet <= m.usage);
});

test('a process started through wrap() runs inside the cgroup, with its own pid', async (t) => {
  const cgroup = createMemoryCgroup(`auditmesh-test-wrap-${process.pid}`);
  if ('error' in cgroup) {
    t.regex(cgroup.error, /cgroup/);
    return;
  }
  t.teardown(() => cgroup.remove());
  // It allocates, says so, and waits to be killed: the reading is taken while it holds the memory.
  const program = 'const keep = Buffer.alloc(32 * 2 ** 20, 1); process.stdout.write(require("fs").readFileSync("/proc/self/cgroup", "utf8") + "pid " + process.pid + " ready " + keep.length); setInterval(() => {}, 1000)';
  const [command, ...args] = cgroup.wrap([process.execPath, '-e', program]);
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = once(child, 'exit');
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  for await (const chunk of child.stdout) {
    out += (chunk as Buffer).toString();
    if (out.includes(' ready ')) break;
  }
  const holding = cgroup.read();
  child.kill('SIGKILL');
  await exited;
  t.true(out.includes(cgroup.path.slice(cgroup.path.indexOf('/auditmesh-test-wrap-'))), out);
  t.true(out.includes(`pid ${child.pid} ready`), 'the shell execs the program: the child pid is the program');
  t.true(holding !== null && holding.anon >= 16 * MIB, `anon ${holding?.anon}`);
});
