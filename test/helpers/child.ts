import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI_FROM_SOURCE = fileURLToPath(new URL('./auditmesh-cli.ts', import.meta.url));

/** The folders `npm run build` compiles (tsconfig.build.json). */
const BUILT_FOLDERS = ['ledger', 'wire', 'command', 'anomalies', 'proxy', 'control'];

/** True when every source file of the CLI has a compiled file in build/ at least as new. */
function buildIsCurrent(): boolean {
  const walk = (dir: string): boolean =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).every((e) => {
      const rel = join(dir, e.name);
      if (e.isDirectory()) return e.name === 'node_modules' || walk(rel);
      if (!e.name.endsWith('.ts') || e.name.endsWith('.d.ts')) return true;
      try {
        return statSync(join(ROOT, 'build', rel.replace(/\.ts$/, '.js'))).mtimeMs >= statSync(join(ROOT, rel)).mtimeMs;
      } catch {
        return false;
      }
    });
  try {
    return BUILT_FOLDERS.every(walk);
  } catch {
    return false;
  }
}

/**
 * How a test starts the CLI in a process of its own: the compiled bin/auditmesh.js when build/ is
 * current (`npm test` builds first; it starts in about half the time, and the suite starts
 * hundreds of these), else from source under tsx, so a test run without a build never runs stale code.
 */
export const CLI: string[] = buildIsCurrent() ? [join(ROOT, 'bin', 'auditmesh.js')] : ['--import=tsx', CLI_FROM_SOURCE];

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `auditmesh ARGS` from source to completion. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Finished> {
  return finish(spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env } }), opts.timeoutMs ?? 90_000);
}

/** Runs the built CLI (`bin/auditmesh.js`, what `npx auditmesh` runs) to completion. */
export function runBuiltCli(args: string[]): Promise<Finished> {
  return finish(spawn(process.execPath, ['bin/auditmesh.js', ...args], { cwd: ROOT }), 90_000);
}

function finish(child: ChildProcess, timeoutMs: number): Promise<Finished> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += c));
  child.stderr!.on('data', (c) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** A background process: its output so far, a wait for a line, and its end. */
export interface Running {
  child: ChildProcess;
  output: () => { stdout: string; stderr: string };
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  done: Promise<Finished>;
}

/** Starts `auditmesh ARGS` from source in the background; killed when the test ends. */
export function startCli(t: ExecutionContext, args: string[]): Running {
  return startProcess(t, process.execPath, [...CLI, ...args]);
}

/** Starts any command in the background, from the repository root (or `cwd`); killed when the test ends. */
export function startProcess(t: ExecutionContext, command: string, args: string[], env: NodeJS.ProcessEnv = process.env, cwd = ROOT): Running {
  const child = spawn(command, args, { cwd, env });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (c) => ((stdout += c), listeners.forEach((l) => l())));
  child.stderr!.on('data', (c) => ((stderr += c), listeners.forEach((l) => l())));
  const done = new Promise<Finished>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return {
    child,
    output: () => ({ stdout, stderr }),
    done,
    waitFor(re, timeoutMs = 45_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = (stdout + stderr).match(re);
          if (m === null) return;
          listeners.delete(check);
          clearTimeout(timer);
          resolve(m);
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no ${re} within ${timeoutMs} ms; output:\n${stdout}\n${stderr}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
  };
}

/** Runs `auditmesh ARGS` in this process (the same dispatch as the CLI), for commands that only print. */
export async function runInProcess(args: string[]): Promise<Finished> {
  const { dispatch } = await import('../../control/cli/main.js');
  let stdout = '';
  let stderr = '';
  const io = { stdout: { write: (c: string) => (stdout += c) }, stderr: { write: (c: string) => (stderr += c) }, env: {}, signal: new AbortController().signal };
  const code = await dispatch(args, io);
  return { code, stdout, stderr };
}
