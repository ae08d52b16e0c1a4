// Loaded by AVA into every test worker (package.json ava.require). Since AVA 6 a worker is not
// exited for us when its tests are done: a handle left open (a server, a socket, a timer, a pipe
// to a child) keeps it alive. AVA's inactivity timeout should end that, but a long t.timeout()
// anywhere in the run disarms it for that long (AVA 7's TimeoutTrigger drops a trigger that falls
// in the window and does not re-arm), so one leak could hold CI for its whole budget. Here a file
// fails instead, naming what it left open: when it has not exited shortly after its last test,
// or when it is still running at a deadline no test file comes near.
import { appendFileSync } from 'node:fs';
import test, { registerCompletionHandler } from 'ava';

const EXIT_GRACE_MS = Number(process.env.AUDITMESH_TEST_EXIT_GRACE_MS ?? 30_000);
const FILE_DEADLINE_MS = Number(process.env.AUDITMESH_TEST_FILE_DEADLINE_MS ?? 12 * 60_000);
const loadedAt = Date.now();

/** What keeps the process alive, as specific as Node tells: child commands, server and socket addresses. */
function openHandles(): string[] {
  const described = (process as unknown as { _getActiveHandles?: () => object[] })._getActiveHandles?.() ?? [];
  const handles = described.map((h) => {
    const o = h as { spawnargs?: string[]; pid?: number; address?: () => unknown; remoteAddress?: string; remotePort?: number; localPort?: number };
    if (Array.isArray(o.spawnargs)) {
      // Not left behind to hold anything else open: the file fails either way.
      (h as { kill: (s: string) => void }).kill('SIGKILL');
      return `child ${o.pid} (${o.spawnargs.join(' ').slice(0, 200)}, killed)`;
    }
    if (o.remotePort !== undefined) return `socket :${o.localPort} -> ${o.remoteAddress}:${o.remotePort}`;
    const address = typeof o.address === 'function' ? o.address() : null;
    return `${h.constructor.name}${address !== null && typeof address === 'object' ? ` ${JSON.stringify(address)}` : ''}`;
  });
  const resources = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout' && r !== 'TCPSocketWrap' && r !== 'PipeWrap' && r !== 'TCPServerWrap' && r !== 'ProcessWrap');
  return [...handles, ...resources];
}

function giveUp(why: string, code: number): void {
  process.stderr.write(`exit-watch: ${why}; still open: ${openHandles().join(', ') || '(timers only)'}\n`);
  process.exit(code);
}

setTimeout(() => giveUp(`the test file is still running ${Date.now() - loadedAt} ms after it started`, 4), FILE_DEADLINE_MS).unref();

registerCompletionHandler(() => {
  const doneAt = Date.now();
  setTimeout(() => giveUp(`the test file did not exit ${Date.now() - doneAt} ms after its last test`, 3), EXIT_GRACE_MS).unref();
  // Where the suite's time goes: one line per file, its wall time from load to its last test.
  const timing = process.env.AUDITMESH_TEST_TIMING_FILE;
  if (timing) appendFileSync(timing, `${((doneAt - loadedAt) / 1000).toFixed(1)}\t${test.meta.file.replace(/^.*\/test\//, 'test/')}\n`);
  if (process.env.AUDITMESH_TEST_EXIT_LOG) process.on('exit', () => process.stderr.write(`exit-watch: exited ${Date.now() - doneAt} ms after its last test\n`));
});
