import { join } from 'node:path';
import { ROOT } from '../helpers/child.js';
import { productionImage } from '../helpers/production-image.js';

/** What a container image is to the harness: host paths bound into the container's root, and the image's config. */
export interface Image {
  /** Host path → absolute path in the container (files or folders), read-only. */
  binds: Array<{ host: string; path: string }>;
  entrypoint: string[];
  workdir: string;
  /** USER of the image: a uid, or undefined for root. */
  user: number | undefined;
  /** ENV of the image. */
  env: Record<string, string>;
}

/** The PATH of the node:20-bookworm-slim base image. */
const IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Where Debian's package puts nats-server. */
export const NATS_SERVER = '/usr/sbin/nats-server';

/** Image references → images. The auditmesh image is the production install of deploy/Dockerfile, pruned (test/helpers/production-image.ts). */
export type ImageRegistry = (reference: string) => Promise<Image>;

const APPS: Record<string, Image> = {
  'registry.example/shop-app:1': {
    binds: [
      { host: join(ROOT, 'test/fixtures/cluster/shop-app.mjs'), path: '/app/shop-app.mjs' },
      { host: join(ROOT, 'test/fixtures/echo.proto'), path: '/app/echo.proto' },
      { host: join(ROOT, 'node_modules'), path: '/app/node_modules' },
    ],
    entrypoint: ['node', '/app/shop-app.mjs'],
    workdir: '/app',
    user: undefined,
    env: { PATH: IMAGE_PATH },
  },
};

export function defaultRegistry(extra: Record<string, Image> = {}): ImageRegistry {
  return async (reference) => {
    if (/^(docker\.io\/)?auditmesh\/auditmesh:/.test(reference)) {
      const image = await productionImage();
      const user = image.user === undefined ? undefined : Number(image.user);
      return { binds: [{ host: image.dir, path: image.workdir }], entrypoint: image.entrypoint, workdir: image.workdir, user, env: { PATH: IMAGE_PATH } };
    }
    // The official NATS image (scratch variant: the binary at /nats-server, no USER) is the host's
    // nats-server, Debian's 2.9.10 as CI installs it: any 2.9 tag the install renders runs it.
    if (/^(docker\.io\/)?(library\/)?nats:2\.9\.\d+(-[a-z0-9.]+)?$/.test(reference)) {
      return { binds: [{ host: NATS_SERVER, path: '/nats-server' }], entrypoint: ['/nats-server'], workdir: '/', user: undefined, env: { PATH: IMAGE_PATH } };
    }
    const app = extra[reference] ?? APPS[reference];
    if (app === undefined) throw new Error(`image ${reference} is not in the harness' registry (test/cluster/image-registry.ts)`);
    return app;
  };
}
