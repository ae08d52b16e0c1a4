import type { ExecutionContext } from 'ava';
import { runFromImage } from '../helpers/image-process.js';
import { productionImage } from '../helpers/production-image.js';
import { parseObjects, type KubeObject } from './objects.js';

/** `auditmesh ARGS` run from the production image, its YAML output parsed: what `... | kubectl apply -f -` applies. */
export async function rendered(t: ExecutionContext, args: string[]): Promise<KubeObject[]> {
  const out = await runFromImage(t, await productionImage(), args);
  if (out.code !== 0) throw new Error(`auditmesh ${args.join(' ')} exited ${out.code}: ${out.stderr}`);
  return parseObjects(out.stdout);
}
