// Loaded by AVA into every test worker (package.json ava.require). Since AVA 6 a worker is not
// exited for us when its tests are done: a handle left open (a server, a socket, a timer, a pipe
// to a child) keeps it alive. AVA's inactivity timeout should end that, but a long t.timeout()
// anywhere in the run disarms it for that long (AVA 7's TimeoutTrigger drops a trigger that falls
// in the window and does not re-arm), so one leak could hold CI for its whole budget. Here a file
// fails instead, naming what it left open: when it has not exited shortly after its last test,
// or when it is still running at a deadline no test file comes near.
import { registerCompletionHandler } from 'ava';

const EXIT_GRACE_MS = Number(process.env.AUDITMESH_TEST_EXIT_GRACE_MS ?? 30_000);
const FILE_DEADLINE_MS = Number(process.env.AUDITMESH_TEST_FILE_DEADLINE_MS ?? 12 * 60_000);
const loadedAt = Date.now();

function giveUp(why: string, code: number): void {
  const open = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
  process.stderr.write(`exit-watch: ${why}; still open: ${open.join(', ') || '(timers only)'}\n`);
  process.exit(code);
}

setTimeout(() => giveUp(`the test file is still running ${Date.now() - loadedAt} ms after it started`, 4), FILE_DEADLINE_MS).unref();

registerCompletionHandler(() => {
  const doneAt = Date.now();
  setTimeout(() => giveUp(`the test file did not exit ${Date.now() - doneAt} ms after its last test`, 3), EXIT_GRACE_MS).unref();
  if (process.env.AUDITMESH_TEST_EXIT_LOG) process.on('exit', () => process.stderr.write(`exit-watch: exited ${Date.now() - doneAt} ms after its last test\n`));
});
