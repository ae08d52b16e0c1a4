import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import ts from 'typescript';

/**
 * The project's import graph, read with the TypeScript compiler (every static import and export,
 * type-only ones included, and every `import()` of a literal), and the layering rules it must keep:
 * docs/ARCHITECTURE.md, "What may import what".
 */

/** The ground floor: imported by the sidecar and the control plane, importing neither. */
export const GROUND_FLOOR = ['ledger', 'wire', 'command', 'anomalies'] as const;
/** The one sidecar module the control plane may import: its entry point. */
export const SIDECAR_ENTRY = 'proxy/main.ts';

export type ImportGraph = ReadonlyMap<string, readonly string[]>;

/** Relative imports of each file (paths from the repository root, `.ts`), external packages left out. */
export function importGraph(root: string, files: readonly string[]): ImportGraph {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const { importedFiles } = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
    const targets = importedFiles
      .map((ref) => ref.fileName)
      .filter((spec) => spec.startsWith('./') || spec.startsWith('../'))
      .map((spec) => normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts'));
    graph.set(file, targets);
  }
  return graph;
}

const topFolder = (file: string): string => file.split('/')[0]!;
const isGround = (file: string): boolean => (GROUND_FLOOR as readonly string[]).includes(topFolder(file));

/** Why an import from `from` to `to` breaks the layering, or null when it may be. */
export function layerViolation(from: string, to: string): string | null {
  const floor = topFolder(from);
  if (isGround(from) && (topFolder(to) === 'proxy' || topFolder(to) === 'control')) return `the ground floor imports ${topFolder(to)}/`;
  if (floor === 'proxy' && topFolder(to) === 'control') return 'the sidecar imports the control plane';
  if (floor === 'control' && topFolder(to) === 'proxy' && to !== SIDECAR_ENTRY) return `the control plane imports a sidecar internal (only ${SIDECAR_ENTRY} may be)`;
  return null;
}

/** Every import that breaks the layering, as `from -> to: why`. */
export function layerViolations(graph: ImportGraph): string[] {
  const out: string[] = [];
  for (const [from, targets] of graph) {
    for (const to of targets) {
      const why = layerViolation(from, to);
      if (why !== null) out.push(`${from} -> ${to}: ${why}`);
    }
  }
  return out;
}

/** The import circles: strongly connected groups of more than one module, or a module importing itself (Tarjan). */
export function importCircles(graph: ImportGraph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const circles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const group: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
    } while (w !== v);
    if (group.length > 1 || graph.get(v)!.includes(v)) circles.push(group.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return circles;
}
