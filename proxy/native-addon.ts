import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Loads one of the addons node-gyp builds from binding.gyp during `npm ci` (build/Release/NAME.node),
 * from source (proxy/) or from the compiled build/proxy/. Throws once, clearly, when it is missing.
 */
const cache = new Map<string, unknown>();

export function loadNativeAddon<T>(name: string): T {
  let addon = cache.get(name);
  if (addon === undefined) {
    // From source (proxy/) the addons are in ../build/Release; from the compiled build/proxy/, in ../Release.
    const candidates = [`../build/Release/${name}.node`, `../Release/${name}.node`];
    const found = candidates.map((p) => fileURLToPath(new URL(p, import.meta.url))).find((p) => existsSync(p));
    try {
      if (found === undefined) throw new Error(`not found (looked for ${candidates.join(', ')} next to ${fileURLToPath(import.meta.url)})`);
      addon = createRequire(import.meta.url)(found) as T;
    } catch (err) {
      addon = new Error(`auditmesh: the ${name} addon (build/Release/${name}.node) could not be loaded; it is built by \`npm ci\` with node-gyp (needs python3, make, a C compiler): ${(err as Error).message}`, { cause: err });
    }
    cache.set(name, addon);
  }
  if (addon instanceof Error) throw addon;
  return addon as T;
}
