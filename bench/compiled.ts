// The servers under test run from compiled JavaScript, as the sidecar is deployed: a process
// started through tsx also carries tsx's loader thread (its own V8 isolate, tens of MiB of RSS,
// and compile work in every worker that loads a .ts file), which the deployed sidecar does not.
// So the report first compiles proxy/, control/ and bench/ into bench/results/build/ (not build/,
// which tests and the CLI read while the report may be compiling).
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Compiled JS (as deployed), or the TypeScript source through tsx (no compile step). */
export type ServersFrom = 'build' | 'source';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Where tsconfig.bench.json compiles to. */
export const BENCH_BUILD_DIR = join(REPO_ROOT, 'bench', 'results', 'build');

/** The program that runs a bench/ entry (e.g. 'serve'), from the build or from source. */
export function benchEntry(name: string, from: ServersFrom, buildDir = BENCH_BUILD_DIR): string[] {
  return from === 'build' ? [process.execPath, join(buildDir, 'bench', `${name}.js`)] : [process.execPath, '--import=tsx', join(REPO_ROOT, 'bench', `${name}.ts`)];
}

/** Compiles with tsc -p tsconfig.bench.json; throws with tsc's output on failure. */
export function compileServers(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  rmSync(BENCH_BUILD_DIR, { recursive: true, force: true });
  const result = spawnSync(process.execPath, [tsc, '-p', join(REPO_ROOT, 'tsconfig.bench.json')], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`tsc -p tsconfig.bench.json failed (exit ${result.status}):\n${result.stdout}${result.stderr}`);
  // The compiled original-destination loader looks for the native addon at ../../Release from
  // proxy/capture/; the addon itself stays where node-gyp built it.
  mkdirSync(BENCH_BUILD_DIR, { recursive: true });
  symlinkSync(join(REPO_ROOT, 'build', 'Release'), join(BENCH_BUILD_DIR, 'Release'));
}
