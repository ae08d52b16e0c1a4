import type { ExecutionContext } from 'ava';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCaFiles } from '../../control/collector/ingest/mesh-ca.js';
import type { Container, Pod } from '../../control/injector/pod.js';
import { schemaErrors } from './kube-schema.js';
import { tempDir } from './sidecar.js';

/** A mesh CA made as the install makes it, its ca.crt and ca.key written to a temp folder. */
export async function writeMeshCa(t: ExecutionContext): Promise<{ certPem: string; keyPem: string; certFile: string; keyFile: string }> {
  const dir = await tempDir(t);
  const ca = await createCaFiles();
  const files = { certFile: join(dir, 'ca.crt'), keyFile: join(dir, 'ca.key') };
  await writeFile(files.certFile, ca.certPem);
  await writeFile(files.keyFile, ca.keyPem, { mode: 0o600 });
  return { ...ca, ...files };
}

type Mount = { name: string; mountPath: string; readOnly?: boolean };
type EnvVar = { name: string; value?: string };

/**
 * The pod carries the mesh CA as the injector embeds it: the certificate in its
 * auditmesh.io/ca-bundle annotation, a downwardAPI volume showing that annotation as ca.crt,
 * mounted read-only into auditmesh-proxy alone, AUDITMESH_CA_FILE naming the file; the pod is
 * valid, and nothing of the CA's key is anywhere in it.
 */
export function assertCarriesMeshCa(t: ExecutionContext, pod: Pod, ca: { certPem: string; keyPem: string }): void {
  t.is(schemaErrors(pod), null);
  const annotations = pod.metadata?.annotations ?? {};
  t.is(new X509Certificate(annotations['auditmesh.io/ca-bundle'] ?? '').fingerprint256, new X509Certificate(ca.certPem).fingerprint256);
  const volume = (pod.spec.volumes ?? []).find((v) => v.name === 'auditmesh-ca') as { name: string; downwardAPI?: { items: Array<{ path: string; fieldRef: { fieldPath: string } }> } } | undefined;
  t.deepEqual(
    volume?.downwardAPI?.items.map((i) => ({ path: i.path, fieldPath: i.fieldRef.fieldPath })),
    [{ path: 'ca.crt', fieldPath: "metadata.annotations['auditmesh.io/ca-bundle']" }],
  );
  const all: Container[] = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
  const mounting = all.filter((c) => ((c.volumeMounts ?? []) as Mount[]).some((m) => m.name === 'auditmesh-ca'));
  t.deepEqual(mounting.map((c) => c.name), ['auditmesh-proxy']);
  const mount = (mounting[0]?.volumeMounts as Mount[] | undefined)?.find((m) => m.name === 'auditmesh-ca');
  t.true(mount?.readOnly);
  const env = (mounting[0]?.env ?? []) as EnvVar[];
  t.is(env.find((e) => e.name === 'AUDITMESH_CA_FILE')?.value, `${mount?.mountPath}/ca.crt`);
  t.true((JSON.parse(annotations['auditmesh.io/status'] ?? '{}') as { volumes?: string[] }).volumes?.includes('auditmesh-ca'));
  const keyBody = ca.keyPem.trim().split('\n').slice(1, -1).join('');
  const text = JSON.stringify(pod);
  t.false(text.includes('PRIVATE KEY') || ca.keyPem.trim().split('\n').slice(1, -1).some((line) => text.includes(line)) || text.includes(keyBody), 'the CA key reached the pod');
}
