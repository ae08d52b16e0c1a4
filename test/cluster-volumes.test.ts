import test from 'ava';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { prepareVolumes } from './cluster/volumes.js';
import { ObjectStore, type KubeObject } from './cluster/objects.js';
import type { PodInfo, PodSpec } from './cluster/pod-fields.js';
import { createTokenIssuer } from './cluster/token-issuer.js';
import { tempDir } from './helpers/sidecar.js';

// The harness' kubelet lays out downwardAPI and Secret volumes as the kubelet does, so that what
// the injector and the install render is read by the sidecar and the collector as in a cluster.

const POD_UID = '5f0c2a1e-8d4b-4f6e-9a3c-2b1d0e9f8a7c';

function podInfo(spec: PodSpec, metadata: Partial<KubeObject['metadata']> = {}): PodInfo {
  const object = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'orders-1', namespace: 'shop', ...metadata }, spec } as PodInfo['object'];
  return { object, name: 'orders-1', namespace: 'shop', uid: POD_UID, ip: '10.0.0.9', nodeName: 'node', serviceAccount: { name: 'default', uid: 'sa' } };
}

test('a downwardAPI volume holds the fields its items name: one annotation or label, all labels or annotations as sorted key="value" lines, name, namespace, uid; each with its mode', async (t) => {
  const bundle = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  const item = (path: string, fieldPath: string, mode?: number): Record<string, unknown> => ({ path, fieldRef: { apiVersion: 'v1', fieldPath }, ...(mode === undefined ? {} : { mode }) });
  const pod = podInfo(
    {
      containers: [],
      volumes: [
        {
          name: 'info',
          downwardAPI: {
            defaultMode: 0o444,
            items: [
              item('ca/ca.crt', "metadata.annotations['auditmesh.io/ca-bundle']"),
              item('app', "metadata.labels['app']", 0o400),
              item('labels', 'metadata.labels'),
              item('annotations', 'metadata.annotations'),
              item('name', 'metadata.name'),
              item('namespace', 'metadata.namespace'),
              item('uid', 'metadata.uid'),
            ],
          },
        },
      ],
    },
    { labels: { app: 'orders', 'a.io/tier': 'web "front"' }, annotations: { 'auditmesh.io/ca-bundle': bundle } },
  );
  const dir = await tempDir(t);
  const volumes = await prepareVolumes({ store: new ObjectStore(), issuer: await createTokenIssuer(), pod, dir, claimDir: async () => dir });
  const at = (file: string): string => join(volumes.get('info')!.path, file);
  t.is(await readFile(at('ca/ca.crt'), 'utf8'), bundle);
  t.is(await readFile(at('app'), 'utf8'), 'orders');
  t.is(await readFile(at('labels'), 'utf8'), 'a.io/tier="web \\"front\\""\napp="orders"');
  t.is(await readFile(at('annotations'), 'utf8'), `auditmesh.io/ca-bundle=${JSON.stringify(bundle)}`);
  t.is(await readFile(at('name'), 'utf8'), 'orders-1');
  t.is(await readFile(at('namespace'), 'utf8'), 'shop');
  t.is(await readFile(at('uid'), 'utf8'), POD_UID);
  t.is((await stat(at('app'))).mode & 0o777, 0o400);
  t.is((await stat(at('uid'))).mode & 0o777, 0o444);
});

test('a Secret volume takes the items it names, under their paths, and the pod fsGroup as the group of its files with group read added', async (t) => {
  const store = new ObjectStore();
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  store.add([{ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'ca', namespace: 'default' }, data: { 'tls.crt': b64('cert'), 'tls.key': b64('key') } }]);
  const spec = { containers: [], securityContext: { fsGroup: 65532 }, volumes: [{ name: 'ca', secret: { secretName: 'ca', defaultMode: 0o400, items: [{ key: 'tls.crt', path: 'ca.crt' }] } }] } as PodSpec;
  const pod = podInfo(spec, { namespace: 'default' });
  pod.namespace = 'default';
  const dir = await tempDir(t);
  const volumes = await prepareVolumes({ store, issuer: await createTokenIssuer(), pod, dir, claimDir: async () => dir });
  const file = join(volumes.get('ca')!.path, 'ca.crt');
  t.is(await readFile(file, 'utf8'), 'cert');
  const info = await stat(file);
  t.is(info.gid, 65532);
  t.is(info.mode & 0o777, 0o440);
  await t.throwsAsync(stat(join(volumes.get('ca')!.path, 'tls.key')), { code: 'ENOENT' }, 'a key the items leave out is not there');
});
