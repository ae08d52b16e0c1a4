import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './child.js';
import { parseDockerfile, type CopyStep, type Stage } from './dockerfile.js';

const run = promisify(execFile);

/**
 * The auditmesh image's file system as deploy/Dockerfile builds it, reproduced without Docker:
 * the build stage gets exactly the paths the Dockerfile copies, plus the node_modules and build/
 * that `npm ci` made here (a second `npm ci` would rebuild native addons for minutes), then
 * `npm prune --omit=dev --offline`; the final stage gets exactly what the Dockerfile copies from
 * it. The Dockerfile is the one list of paths: nothing here names them.
 */
export interface ProductionImage {
  /** The final stage's WORKDIR contents (mounted at `workdir` by the cluster harness). */
  dir: string;
  /** WORKDIR, ENTRYPOINT and USER of the final stage. */
  workdir: string;
  entrypoint: string[];
  user: string | undefined;
}

/** RUN steps the reproduction knows: system packages come from the host; npm ci is reproduced as above. */
const KNOWN_RUNS: Array<{ re: RegExp; npm: boolean }> = [
  { re: /^apt-get update && apt-get install -y --no-install-recommends [a-z0-9 +.-]+ && rm -rf \/var\/lib\/apt\/lists\/\*$/, npm: false },
  { re: /^npm ci && npm prune --omit=dev$/, npm: true },
];

type PackageJson = Record<string, unknown>;

export interface ImageVariant {
  /** Rewrites the package.json the build stage copies (to show what a wrongly placed dependency does). */
  packageJson?: (pkg: PackageJson) => PackageJson;
}

const built = new Map<string, Promise<ProductionImage>>();
const made: string[] = [];
process.once('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** The pruned image folder, built once per test process (per variant) and removed when it exits. */
export function productionImage(variant: ImageVariant = {}): Promise<ProductionImage> {
  const key = variant.packageJson === undefined ? '' : variant.packageJson.toString();
  let image = built.get(key);
  if (image === undefined) {
    image = buildImage(variant);
    built.set(key, image);
  }
  return image;
}

async function buildImage(variant: ImageVariant): Promise<ProductionImage> {
  const stages = parseDockerfile();
  const final = stages.at(-1)!;
  if (final.entrypoint === undefined) throw new Error('Dockerfile: the final stage has no ENTRYPOINT');
  const root = await mkdtemp(join(tmpdir(), 'auditmesh-image-'));
  made.push(root);
  // Readable by the uids the image runs as (the proxy's, the control plane's).
  await chmod(root, 0o755);
  const dirs = new Map<string, string>();
  for (const [i, stage] of stages.entries()) {
    const dir = join(root, stage.name ?? `stage${i}`);
    await mkdir(dir, { recursive: true });
    for (const step of stage.copies) await copy(step, stage, dir, dirs, stages);
    for (const step of stage.runs) await runStep(step, dir, variant);
    if (stage.name !== undefined) dirs.set(stage.name, dir);
    dirs.set(String(i), dir);
  }
  const dir = dirs.get(String(stages.length - 1))!;
  await chmod(dir, 0o755);
  return { dir, workdir: final.workdir, entrypoint: final.entrypoint, user: final.user };
}

/** A container path of a stage as a path in its folder: only paths under WORKDIR are reproduced. */
function inStage(stage: Stage, dir: string, path: string): string {
  const abs = posix.resolve(stage.workdir, path);
  const rel = posix.relative(stage.workdir, abs);
  if (rel.startsWith('..')) throw new Error(`Dockerfile: ${path} is outside WORKDIR ${stage.workdir}; the reproduction keeps WORKDIR only`);
  return join(dir, rel);
}

async function copy(step: CopyStep, stage: Stage, dir: string, dirs: Map<string, string>, stages: Stage[]): Promise<void> {
  const intoDir = step.dest.endsWith('/') || step.sources.length > 1;
  for (const source of step.sources) {
    let from: string;
    if (step.from === undefined) {
      from = join(ROOT, source);
    } else {
      const fromDir = dirs.get(step.from);
      const fromStage = stages.find((s) => s.name === step.from);
      if (fromDir === undefined || fromStage === undefined) throw new Error(`Dockerfile: COPY --from=${step.from}: no such earlier stage`);
      from = inStage(fromStage, fromDir, source);
    }
    const isDir = (await stat(from)).isDirectory();
    const to = inStage(stage, dir, intoDir && !isDir ? posix.join(step.dest, posix.basename(source)) : step.dest);
    await mkdir(isDir ? to : dirname(to), { recursive: true });
    // node_modules and build/ are large: hard links, as no step here writes into a file in place.
    if (isDir && /(^|\/)(node_modules|build)$/.test(source)) await run('cp', ['-al', `${from}/.`, to]);
    else await cp(from, to, { recursive: true });
  }
}

async function runStep(step: string, dir: string, variant: ImageVariant): Promise<void> {
  const known = KNOWN_RUNS.find((k) => k.re.test(step));
  if (known === undefined) throw new Error(`Dockerfile: the production-install reproduction does not know RUN ${step}`);
  if (!known.npm) return;
  // What npm ci leaves: the installed node_modules and what its install and prepare scripts built.
  await run('cp', ['-al', join(ROOT, 'node_modules'), join(dir, 'node_modules')]);
  await run('cp', ['-al', join(ROOT, 'build'), join(dir, 'build')]);
  // npm rewrites its hidden lockfile: a copy of its own, never a link to the working tree's.
  const hidden = join(dir, 'node_modules/.package-lock.json');
  if (existsSync(hidden)) {
    await rm(hidden);
    await cp(join(ROOT, 'node_modules/.package-lock.json'), hidden);
  }
  if (variant.packageJson !== undefined) {
    const file = join(dir, 'package.json');
    await writeFile(file, JSON.stringify(variant.packageJson(JSON.parse(await readFile(file, 'utf8')) as PackageJson), null, 2));
  }
  await run('npm', ['prune', '--omit=dev', '--offline', '--no-audit', '--no-fund'], { cwd: dir, env: { ...process.env, npm_config_loglevel: 'error' } });
}
