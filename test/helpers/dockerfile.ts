import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './child.js';

/** One COPY of a Dockerfile stage: sources (from the context, or from an earlier stage) and the destination. */
export interface CopyStep {
  from: string | undefined;
  sources: string[];
  dest: string;
}

/** One stage of a multi-stage Dockerfile, as much of it as a test needs to reproduce. */
export interface Stage {
  name: string | undefined;
  base: string;
  workdir: string;
  user: string | undefined;
  copies: CopyStep[];
  runs: string[];
  entrypoint: string[] | undefined;
}

export const DOCKERFILE = join(ROOT, 'deploy/Dockerfile');

/** Instructions, one a line: comments dropped, backslash continuations joined. */
function instructions(text: string): string[] {
  const joined = text.replace(/\\\r?\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/**
 * The stages of deploy/Dockerfile. Only the instructions it uses are understood; anything else
 * throws, so a Dockerfile change the production-install test cannot reproduce is seen at once.
 */
export function parseDockerfile(text = readFileSync(DOCKERFILE, 'utf8')): Stage[] {
  const stages: Stage[] = [];
  for (const line of instructions(text)) {
    const [keyword, ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    const stage = stages.at(-1);
    if (keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (m === null) throw new Error(`Dockerfile: cannot read ${line}`);
      stages.push({ name: m[2], base: m[1]!, workdir: '/', user: undefined, copies: [], runs: [], entrypoint: undefined });
      continue;
    }
    if (stage === undefined) throw new Error(`Dockerfile: ${keyword} before FROM`);
    if (keyword === 'WORKDIR') stage.workdir = args;
    else if (keyword === 'USER') stage.user = args;
    else if (keyword === 'RUN') stage.runs.push(args);
    else if (keyword === 'ENTRYPOINT') stage.entrypoint = JSON.parse(args) as string[];
    else if (keyword === 'COPY') stage.copies.push(copyStep(rest));
    else throw new Error(`Dockerfile: the production-install reproduction does not know ${keyword} (${line})`);
  }
  return stages;
}

function copyStep(words: string[]): CopyStep {
  let from: string | undefined;
  const paths = words.filter((w) => {
    const m = /^--from=(\S+)$/.exec(w);
    if (m !== null) from = m[1];
    else if (w.startsWith('--')) throw new Error(`Dockerfile: COPY option ${w} is not reproduced`);
    return m === null;
  });
  const dest = paths.pop();
  if (dest === undefined || paths.length === 0) throw new Error(`Dockerfile: COPY needs a source and a destination: COPY ${words.join(' ')}`);
  return { from, sources: paths, dest };
}
