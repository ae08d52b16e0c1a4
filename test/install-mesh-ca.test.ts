import test from 'ava';
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseFlags } from '../command/flags.js';
import { INJECTOR_FLAGS } from '../control/cli/injector.js';
import { COLLECTOR_FLAGS } from '../control/cli/collector.js';
import { createCaFiles, openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { runInProcess } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';
import { schemaErrors } from './helpers/kube-schema.js';

// The mesh CA as `auditmesh install` deploys it: a Secret the collector mounts at its --ca-dir and
// the injector, certificate only, at its --ca-file; or cert-manager's Certificate for that Secret.

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };
type Volume = { name: string; secret?: { secretName: string; defaultMode?: number; items?: Array<{ key: string; path: string }> } };
type PodSpec = { containers: Array<{ name: string; args: string[]; volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }> }>; volumes: Volume[] };

async function install(args: string[]): Promise<{ objects: Obj[]; stderr: string }> {
  const r = await runInProcess(['install', '-o', 'json', ...args]);
  if (r.code !== 0) throw new Error(`auditmesh install ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return { objects: r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Obj), stderr: r.stderr };
}

const secretOf = (objects: Obj[]): (Obj & { type: string; data: Record<string, string> }) | undefined => objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'auditmesh-mesh-ca') as never;
const podSpec = (objects: Obj[], name: string): PodSpec => (objects.find((o) => o.kind === 'Deployment' && o.metadata.name === name) as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
const decode = (b64: string | undefined): string => Buffer.from(b64 ?? '', 'base64').toString('utf8');

/** The container's mount of the pod's volume that reads `secretName`, and that volume. */
function secretMount(spec: PodSpec, secretName: string): { volume: Volume; mount: PodSpec['containers'][number]['volumeMounts'][number] } {
  const volume = spec.volumes.find((v) => v.secret?.secretName === secretName);
  const mount = spec.containers[0]!.volumeMounts.find((m) => m.name === volume?.name);
  if (volume === undefined || mount === undefined) throw new Error(`no mount of Secret ${secretName}`);
  return { volume, mount };
}

test('install --certs self-signed embeds a new mesh CA in a Secret that the collector mounts read-only at its --ca-dir and opens as its CA', async (t) => {
  const { objects, stderr } = await install(['--certs', 'self-signed']);
  t.deepEqual(objects.map(schemaErrors).filter((e) => e !== null), []);
  const secret = secretOf(objects)!;
  t.is(secret.type, 'kubernetes.io/tls');
  t.is(secret.metadata.namespace, 'auditmesh-system');
  const cert = new X509Certificate(decode(secret.data['tls.crt']));
  t.true(cert.ca);
  t.true(cert.checkPrivateKey(createPrivateKey(decode(secret.data['tls.key']))));
  t.is(decode(secret.data['ca.crt']), decode(secret.data['tls.crt']));
  t.regex(stderr, /a new mesh CA is embedded.*--ca-dir DIR/s, 'rendering a new CA says it replaces a running one');

  const collector = podSpec(objects, 'auditmesh-collector');
  const { values } = parseFlags(COLLECTOR_FLAGS, collector.containers[0]!.args.slice(1), {});
  const { volume, mount } = secretMount(collector, 'auditmesh-mesh-ca');
  t.is(values['ca-dir'], mount.mountPath);
  t.true(mount.readOnly);
  t.deepEqual(volume.secret!.items, [{ key: 'tls.crt', path: 'ca.crt' }, { key: 'tls.key', path: 'ca.key' }]);
  t.is(volume.secret!.defaultMode, 0o440, 'the key readable by the collector (the pod fsGroup) only');
  // The files as the kubelet lays them out are a CA the collector opens and issues with, never making its own.
  const dir = await tempDir(t);
  for (const item of volume.secret!.items!) await writeFile(join(dir, item.path), decode(secret.data[item.key]));
  const ca = await openMeshCa(dir, { create: false });
  t.is(new X509Certificate(ca.certPem).fingerprint256, cert.fingerprint256);
  const { publicKey } = generateKeyPairSync('ed25519');
  const issued = await ca.issue(await crypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), { name: 'Ed25519' }, true, ['verify']), { uris: ['spiffe://cluster.local/ns/shop/sa/orders'] }, 3_600_000);
  t.true(new X509Certificate(issued.chainPem).verify(cert.publicKey));
});

test('the injector mounts only the mesh CA certificate of the Secret, never its key, and embeds it (--ca-file)', async (t) => {
  for (const args of [['--certs', 'self-signed'], []]) {
    const { objects } = await install(args);
    const injector = podSpec(objects, 'auditmesh-injector');
    const { volume, mount } = secretMount(injector, 'auditmesh-mesh-ca');
    t.deepEqual(volume.secret!.items, [{ key: 'tls.crt', path: 'ca.crt' }], 'items: the certificate alone');
    t.true(mount.readOnly);
    const { values } = parseFlags(INJECTOR_FLAGS, injector.containers[0]!.args.slice(1), {});
    t.is(values['ca-file'], `${mount.mountPath}/ca.crt`);
    // No other control-plane pod mounts it.
    const mounting = objects.filter((o) => o.kind === 'Deployment' && JSON.stringify(o).includes('"secretName":"auditmesh-mesh-ca"')).map((o) => o.metadata.name);
    t.deepEqual(mounting.sort(), ['auditmesh-collector', 'auditmesh-injector']);
  }
});

test('re-rendering makes another CA; --ca-dir embeds the one given (a SEC1 key re-encoded as PKCS#8), so a running cluster keeps its trust root', async (t) => {
  const first = secretOf((await install(['--certs', 'self-signed'])).objects)!;
  const second = secretOf((await install(['--certs', 'self-signed'])).objects)!;
  t.not(first.data['tls.crt'], second.data['tls.crt'], 'a new CA on every render without --ca-dir');

  const dir = await tempDir(t);
  const kept = await createCaFiles();
  const sec1 = createPrivateKey(kept.keyPem).export({ format: 'pem', type: 'sec1' }) as string;
  await writeFile(join(dir, 'ca.crt'), kept.certPem);
  await writeFile(join(dir, 'ca.key'), sec1);
  const again = await install(['--certs', 'self-signed', '--ca-dir', dir]);
  const secret = secretOf(again.objects)!;
  t.is(new X509Certificate(decode(secret.data['tls.crt'])).fingerprint256, new X509Certificate(kept.certPem).fingerprint256);
  t.is(decode(secret.data['tls.key']).trim(), kept.keyPem.trim());
  t.notRegex(again.stderr, /a new mesh CA/);
  // --ca-dir alone means an embedded CA, whatever --certs says.
  t.truthy(secretOf((await install(['--ca-dir', dir])).objects));
});

test('a --ca-dir that is not a usable mesh CA is refused, naming what is wrong; --ca takes cert-manager or self-signed only', async (t) => {
  const dir = await tempDir(t);
  const refused = async (args: string[], code: number, message: RegExp): Promise<void> => {
    const r = await runInProcess(['install', ...args]);
    t.is(r.code, code, args.join(' '));
    t.regex(r.stderr, message);
    t.is(r.stdout, '', 'nothing half-rendered');
  };
  await refused(['--ca-dir', dir], 1, /cannot read .*ca\.crt/);
  const ca = await createCaFiles();
  const other = await createCaFiles();
  await writeFile(join(dir, 'ca.crt'), ca.certPem);
  await writeFile(join(dir, 'ca.key'), other.keyPem);
  await refused(['--ca-dir', dir], 1, /ca\.key is not the key of .*ca\.crt/);
  const rsa = join(dir, 'rsa');
  await mkdir(rsa);
  await writeFile(join(rsa, 'ca.crt'), ca.certPem);
  await writeFile(join(rsa, 'ca.key'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  await refused(['--ca-dir', rsa], 1, /not an ECDSA P-256 key/);
  await refused(['--ca', 'vault'], 2, /--ca: expected cert-manager or self-signed/);
  await refused(['--ca', 'cert-manager', '--ca-dir', dir], 2, /--ca-dir .* cannot go with --ca cert-manager/);
});

test('--ca cert-manager (the default with cert-manager webhook certificates) renders an Issuer and a CA Certificate for the Secret, with no key in the manifests', async (t) => {
  for (const args of [[], ['--certs', 'self-signed', '--ca', 'cert-manager']]) {
    const { objects, stderr } = await install(args);
    t.deepEqual(objects.map(schemaErrors).filter((e) => e !== null), [], args.join(' '));
    t.is(secretOf(objects), undefined);
    t.notRegex(stderr, /a new mesh CA/);
    const certificate = objects.find((o) => o.kind === 'Certificate' && o.metadata.name === 'auditmesh-mesh-ca') as Obj & { spec: Record<string, unknown> & { issuerRef: { name: string } } };
    t.like(certificate.spec, { secretName: 'auditmesh-mesh-ca', isCA: true, privateKey: { algorithm: 'ECDSA', size: 256, encoding: 'PKCS8', rotationPolicy: 'Never' } });
    t.truthy(objects.find((o) => o.kind === 'Issuer' && o.metadata.name === certificate.spec.issuerRef.name));
    // The webhook's own serving pair (self-signed) aside, nothing rendered holds a key.
    const rest = JSON.stringify(objects.filter((o) => o.metadata.name !== 'auditmesh-injector-tls'));
    t.false(rest.includes('PRIVATE KEY') || rest.includes('LS0tLS1CRUdJTiBQUklWQVRF'), 'no key rendered');
  }
});
