import { chmod, chown, mkdir, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ObjectStore } from './objects.js';
import { fieldValue, quantityBytes, type PodInfo } from './pod-fields.js';
import type { TokenIssuer } from './token-issuer.js';

/** A volume made ready on the host for one pod: the folder its mounts bind. */
export interface PreparedVolume {
  name: string;
  kind: string;
  path: string;
  /** emptyDir sizeLimit: the kubelet evicts the pod when the folder grows past it. */
  sizeLimitBytes?: number;
  /** Projected ServiceAccount tokens in it: written again (rotated) by `rotate`. */
  tokens: Array<{ file: string; audience: string; expirationSeconds: number }>;
}

export interface VolumeContext {
  store: ObjectStore;
  issuer: TokenIssuer;
  pod: PodInfo;
  /** Folder for this pod's volumes. */
  dir: string;
  /** Folder of a PersistentVolumeClaim's volume (kept across pods). */
  claimDir(namespace: string, claim: string): Promise<string>;
}

type Source = Record<string, unknown>;
type Item = { key?: string; path: string; mode?: number; fieldRef?: { fieldPath: string } };

/** The kubelet's minimum for a projected token's lifetime. */
const MIN_TOKEN_SECONDS = 600;

/** Writes a file as the kubelet's atomic writer does: readers never see half of it. */
export async function writeAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
}

/** Every volume of the pod, ready to bind; throws as the kubelet fails a pod (naming what is missing). */
export async function prepareVolumes(ctx: VolumeContext): Promise<Map<string, PreparedVolume>> {
  const volumes = new Map<string, PreparedVolume>();
  for (const v of ctx.pod.object.spec.volumes ?? []) {
    const path = join(ctx.dir, v.name);
    const kind = Object.keys(v).find((k) => k !== 'name')!;
    const source = v[kind] as Source;
    const prepared: PreparedVolume = { name: v.name, kind, path, tokens: [] };
    if (kind === 'emptyDir') {
      await mkdir(path, { recursive: true });
      await chmod(path, 0o777);
      if (typeof source.sizeLimit === 'string') prepared.sizeLimitBytes = quantityBytes(source.sizeLimit);
    } else if (kind === 'persistentVolumeClaim') {
      const claim = source.claimName as string;
      if (ctx.store.get('PersistentVolumeClaim', ctx.pod.namespace, claim) === undefined) throw new Error(`persistentvolumeclaim "${claim}" not found in namespace "${ctx.pod.namespace}"`);
      prepared.path = await ctx.claimDir(ctx.pod.namespace, claim);
      const fsGroup = ctx.pod.object.spec.securityContext?.fsGroup;
      if (fsGroup !== undefined) {
        await chown(prepared.path, 0, fsGroup);
        await chmod(prepared.path, 0o2775);
      }
    } else if (kind === 'secret' || kind === 'configMap') {
      await writeObjectFiles(ctx, kind, source, path);
      await applyFsGroup(ctx, path);
    } else if (kind === 'projected') {
      for (const s of source.sources as Source[]) await writeProjected(ctx, s, path, prepared, source.defaultMode as number | undefined);
      await applyFsGroup(ctx, path);
    } else if (kind === 'downwardAPI') {
      await mkdir(path, { recursive: true, mode: 0o755 });
      await writeDownwardApi(ctx, source, path, source.defaultMode as number | undefined);
      await applyFsGroup(ctx, path);
    } else {
      throw new Error(`volume ${v.name}: ${kind} volumes are not supported by the harness`);
    }
    volumes.set(v.name, prepared);
  }
  return volumes;
}

/** The data of a Secret or ConfigMap of the pod's own namespace, as Kubernetes allows no other. */
export function objectData(ctx: Pick<VolumeContext, 'store' | 'pod'>, kind: 'secret' | 'configMap', name: string, optional: boolean): Record<string, Buffer> | null {
  const apiKind = kind === 'secret' ? 'Secret' : 'ConfigMap';
  const o = ctx.store.get(apiKind, ctx.pod.namespace, name);
  if (o === undefined) {
    if (optional) return null;
    const elsewhere = ctx.store.namespacesOf(apiKind, name);
    const hint = elsewhere.length > 0 ? ` (it exists in namespace ${elsewhere.join(', ')}: a pod mounts ${apiKind}s of its own namespace only)` : '';
    throw new Error(`pod ${ctx.pod.namespace}/${ctx.pod.name}: ${kind === 'secret' ? 'secret' : 'configmap'} "${name}" not found in namespace "${ctx.pod.namespace}"${hint}`);
  }
  const data: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries((o.data ?? {}) as Record<string, string>)) data[k] = kind === 'secret' ? Buffer.from(v, 'base64') : Buffer.from(v);
  for (const [k, v] of Object.entries((o.stringData ?? {}) as Record<string, string>)) data[k] = Buffer.from(v);
  for (const [k, v] of Object.entries((o.binaryData ?? {}) as Record<string, string>)) data[k] = Buffer.from(v, 'base64');
  return data;
}

async function writeObjectFiles(ctx: VolumeContext, kind: 'secret' | 'configMap', source: Source, dir: string): Promise<void> {
  const name = (kind === 'secret' ? source.secretName : source.name) as string;
  const data = objectData(ctx, kind, name, source.optional === true);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if (data === null) return;
  const mode = (source.defaultMode as number | undefined) ?? 0o644;
  const items: Item[] = (source.items as Item[] | undefined) ?? Object.keys(data).map((key) => ({ key, path: key }));
  for (const item of items) {
    const value = data[item.key!];
    if (value === undefined) throw new Error(`pod ${ctx.pod.namespace}/${ctx.pod.name}: ${kind} "${name}" has no key "${item.key}"`);
    await writeAtomic(join(dir, item.path), value, item.mode ?? mode);
  }
}

/**
 * What the kubelet does to the atomic-writer volumes (Secret, ConfigMap, downwardAPI, projected)
 * of a pod with an fsGroup: every file's group becomes the fsGroup, with group read added to its
 * mode, so a non-root container reads a Secret mounted with defaultMode 0400 or 0440.
 */
async function applyFsGroup(ctx: VolumeContext, dir: string): Promise<void> {
  const fsGroup = ctx.pod.object.spec.securityContext?.fsGroup;
  if (fsGroup === undefined) return;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const file = join(entry.parentPath, entry.name);
    await chown(file, 0, fsGroup);
    await chmod(file, ((await stat(file)).mode & 0o7777) | (entry.isDirectory() ? 0o2550 : 0o440));
  }
  await chown(dir, 0, fsGroup);
}

/**
 * A downwardAPI volume's items, as the kubelet writes them: a fieldRef of one label or annotation,
 * the name, namespace or uid as its value; `metadata.labels` or `metadata.annotations` whole as
 * `key="value"` lines sorted by key (Go's strconv.Quote, which JSON's quoting matches for these).
 */
async function writeDownwardApi(ctx: VolumeContext, source: Source, dir: string, defaultMode: number | undefined): Promise<void> {
  for (const item of (source.items as Item[] | undefined) ?? []) {
    if (item.fieldRef === undefined) throw new Error(`pod ${ctx.pod.name}: downwardAPI item ${item.path}: only fieldRef is supported by the harness`);
    const path = item.fieldRef.fieldPath;
    const meta = ctx.pod.object.metadata;
    const map = path === 'metadata.labels' ? (meta.labels ?? {}) : path === 'metadata.annotations' ? (meta.annotations ?? {}) : null;
    const lines = (m: Record<string, string>): string => Object.keys(m).sort().map((k) => `${k}=${JSON.stringify(m[k])}`).join('\n');
    const value = map === null ? fieldValue(ctx.pod, path) : lines(map);
    await writeAtomic(join(dir, item.path), value, item.mode ?? defaultMode ?? 0o644);
  }
}

async function writeProjected(ctx: VolumeContext, s: Source, dir: string, prepared: PreparedVolume, defaultMode: number | undefined): Promise<void> {
  if (s.serviceAccountToken !== undefined) {
    const t = s.serviceAccountToken as { audience?: string; expirationSeconds?: number; path: string };
    const expirationSeconds = t.expirationSeconds ?? 3600;
    if (expirationSeconds < MIN_TOKEN_SECONDS) throw new Error(`pod ${ctx.pod.name}: serviceAccountToken expirationSeconds ${expirationSeconds} is below ${MIN_TOKEN_SECONDS}`);
    const token = { file: join(dir, t.path), audience: t.audience ?? ctx.issuer.apiAudience, expirationSeconds };
    prepared.tokens.push(token);
    await writeToken(ctx, token);
  } else if (s.secret !== undefined || s.configMap !== undefined) {
    const kind = s.secret !== undefined ? 'secret' : 'configMap';
    const src = s[kind] as Source;
    await writeObjectFiles(ctx, kind, { ...src, secretName: src.name }, dir);
  } else if (s.downwardAPI !== undefined) {
    await writeDownwardApi(ctx, s.downwardAPI as Source, dir, defaultMode);
  } else {
    throw new Error(`pod ${ctx.pod.name}: projected source ${Object.keys(s).join(',')} is not supported by the harness`);
  }
}

/** A fresh token for the pod, as the kubelet requests one (TokenRequest bound to the pod) and writes it. */
export async function writeToken(ctx: Pick<VolumeContext, 'issuer' | 'pod'>, token: PreparedVolume['tokens'][number]): Promise<void> {
  const { pod } = ctx;
  const jwt = await ctx.issuer.sign({ namespace: pod.namespace, pod: { name: pod.name, uid: pod.uid }, serviceAccount: pod.serviceAccount }, { audience: token.audience, expirationSeconds: token.expirationSeconds });
  await writeAtomic(token.file, jwt);
}
