import { posix } from 'node:path';
import type { ExecutionContext } from 'ava';
import { startProcess, type Finished, type Running } from './child.js';
import type { ProductionImage } from './production-image.js';

/**
 * The image's ENTRYPOINT with its paths under WORKDIR moved to the reproduced folder, then `args`:
 * what `docker run IMAGE ARGS` starts, run straight from the pruned folder.
 */
export function entrypointArgv(image: ProductionImage, args: readonly string[]): string[] {
  const local = (word: string): string => {
    const rel = posix.relative(image.workdir, word);
    return word.startsWith('/') && !rel.startsWith('..') ? posix.join(image.dir, rel) : word;
  };
  return [...image.entrypoint.map(local), ...args];
}

/**
 * A clean environment: nothing of the test runner's (its NODE_OPTIONS load tsx, a devDependency,
 * which would hide exactly the failure the production install must show).
 */
export const CLEAN_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' };

/** Starts `auditmesh ARGS` from the image folder (cwd WORKDIR); killed when the test ends. */
export function startFromImage(t: ExecutionContext, image: ProductionImage, args: readonly string[], env: Record<string, string> = {}): Running {
  const [command, ...rest] = entrypointArgv(image, args);
  return startProcess(t, command!, rest, { ...CLEAN_ENV, ...env }, image.dir);
}

/** Runs `auditmesh ARGS` from the image folder to completion. */
export async function runFromImage(t: ExecutionContext, image: ProductionImage, args: readonly string[]): Promise<Finished> {
  return startFromImage(t, image, args).done;
}

/**
 * Waits for the JSON log line `msg` (the command's listening line) and returns it parsed; rejects
 * with the command's output if the process ends first, so a start that dies is reported as such.
 */
export async function listeningLine(running: Running, msg: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const line = running.waitFor(new RegExp(`^\\{.*"msg":"${msg}".*\\}$`, 'm'), timeoutMs);
  const died = running.done.then((f) => {
    throw new Error(`exited ${f.code} before "${msg}":\n${f.stderr}`);
  });
  const [text] = await Promise.race([line, died]);
  return JSON.parse(text) as Record<string, unknown>;
}
