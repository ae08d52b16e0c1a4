import type { X509Certificate } from 'node:crypto';
import { epochRoot, keyIdOf, linkHead, publicKeyFromSpki, verifyHeadSignature } from './chain.js';
import { caBundleFrom, certifiedIdentity, certifiedKey } from './certified-key.js';
import type { BatchHeader } from './journal-layout.js';
import { leafHash, verifyConsistency, verifyInclusion } from './merkle.js';
import { verifyTreeHead, witnessLeaf, type TreeHead } from './witness-log.js';

/**
 * A portable evidence bundle (docs/BUNDLE.md): records with their proofs, the links that chain
 * them to signed heads, the sidecars' keys and certifications, and the collector's signed tree
 * heads of its witness log with the paths between them. Checked here with no network and nothing
 * else: `auditmesh verify FILE`. The first thing that fails is named.
 */

export const BUNDLE_FORMAT = 'auditmesh-bundle/1';

/** A link as bundled: its header (chain.ts), and the head before it on the first link of a run. */
export type BundleLink = Omit<BatchHeader, 'endorsed_by' | 'endorsement'> & { prev_head?: string };

export interface BundleSidecar {
  id: string;
  service?: string;
  /** Every key that signs a bundled link; `certificate`: the mesh CA's certificate of it (DER base64 or PEM). */
  keys: Array<{ key_id: string; public_key: string; certificate?: string }>;
  /** Ascending by batch, in contiguous runs; the first link of each run carries `prev_head`. */
  links: BundleLink[];
  /** Inclusion of signed links' entries in the collector's log, at a bundled tree head's size. */
  witness: Array<{ batch: number; index: number; tree_size: number; path: string[] }>;
}

export interface BundleRecord {
  sidecar: string;
  seq: number;
  batch: number;
  /** Its leaf's place in the batch: seq - first_seq. */
  index: number;
  /** The record's canonical bytes, base64. */
  bytes: string;
  path: string[];
}

export interface EvidenceBundle {
  format: typeof BUNDLE_FORMAT;
  created_unix_ms: number;
  source?: string;
  /** The mesh CA (PEM) as the collector had it: certifications are checked against it unless verify is given --ca-file. */
  ca_pem?: string;
  collector_keys: Array<{ key_id: string; public_key: string; chain_pem?: string }>;
  /** Ascending, distinct sizes; the last is the newest. */
  tree_heads: TreeHead[];
  /** From each tree head but the newest to the newest. */
  consistency: Array<{ from_size: number; to_size: number; path: string[] }>;
  sidecars: BundleSidecar[];
  records: BundleRecord[];
}

export interface BundleReport {
  ok: boolean;
  kind: 'bundle';
  records: number;
  sidecars: number;
  tree_heads: number;
  /** The newest tree head every proof leads to. */
  tree_head?: Pick<TreeHead, 'tree_size' | 'root' | 'unix_ms' | 'key_id'>;
  /** Where certifications were checked against: --ca-file, the bundle's own CA, or none. */
  ca: 'file' | 'bundle' | 'none';
  /** Reported, not failed: keys with no certification (an --insecure collector), the CA taken from the bundle. */
  notes: string[];
  failure?: { where: string; problem: string };
}

class BundleFailure extends Error {
  constructor(
    readonly where: string,
    problem: string,
  ) {
    super(problem);
  }
}

const hexList = (path: unknown, where: string): Buffer[] => {
  if (!Array.isArray(path) || !path.every((p) => typeof p === 'string' && /^[0-9a-f]{64}$/.test(p))) throw new BundleFailure(where, 'its path is not a list of 32-byte hex hashes');
  return path.map((p: string) => Buffer.from(p, 'hex'));
};

/** Checks a parsed bundle fully, offline. `ca`: the CA bundle to pin (--ca-file); without it, the bundle's own `ca_pem`. */
export function verifyBundle(bundle: EvidenceBundle, ca?: readonly X509Certificate[]): BundleReport {
  const report: BundleReport = { ok: false, kind: 'bundle', records: 0, sidecars: 0, tree_heads: 0, ca: 'none', notes: [] };
  try {
    check(bundle, ca, report);
    report.ok = true;
  } catch (err) {
    if (!(err instanceof BundleFailure)) {
      report.failure = { where: 'bundle', problem: `it is not a well-formed bundle: ${(err as Error).message}` };
      return report;
    }
    report.failure = { where: err.where, problem: err.message };
  }
  return report;
}

function check(b: EvidenceBundle, pinned: readonly X509Certificate[] | undefined, report: BundleReport): void {
  if (b?.format !== BUNDLE_FORMAT) throw new BundleFailure('bundle', `format is ${JSON.stringify(b?.format)}, not ${BUNDLE_FORMAT}`);
  let ca: readonly X509Certificate[] | undefined = pinned;
  if (ca !== undefined) report.ca = 'file';
  else if (b.ca_pem !== undefined) {
    try {
      ca = caBundleFrom(b.ca_pem);
    } catch (err) {
      throw new BundleFailure('bundle CA', `its CA certificate cannot be read (${(err as Error).message})`);
    }
    report.ca = 'bundle';
    report.notes.push('certifications checked against the CA certificate the bundle carries: pin the mesh CA with --ca-file');
  }
  const collectorKeys = collectorKeysOf(b, ca, report);
  const roots = treeHeads(b, collectorKeys, report);
  for (const s of b.sidecars) sidecar(s, roots, ca, report);
  const byId = new Map(b.sidecars.map((s) => [s.id, s]));
  for (const r of b.records) record(r, byId.get(r.sidecar));
  report.records = b.records.length;
  report.sidecars = b.sidecars.length;
}

/** Collector keys by id; each id must be its key's, and a chain must certify it. */
function collectorKeysOf(b: EvidenceBundle, ca: readonly X509Certificate[] | undefined, report: BundleReport): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const k of b.collector_keys) {
    const where = `collector key ${k.key_id}`;
    const spki = Buffer.from(k.public_key, 'base64');
    if (publicKeyFromSpki(spki) === null || keyIdOf(spki) !== k.key_id) throw new BundleFailure(where, `its public key is not an Ed25519 key whose id is ${k.key_id}: the key was altered`);
    if (k.chain_pem === undefined) report.notes.push(`${where} has no certification (a collector run --insecure or without the mesh CA): the tree heads it signs are as good as that key`);
    else if (ca === undefined) report.notes.push(`${where} carries a certificate chain, but no CA to check it against (give --ca-file)`);
    else {
      const c = certifiedKey(k.chain_pem, ca, spki);
      if ('problem' in c) throw new BundleFailure(where, c.problem);
    }
    keys.set(k.key_id, spki);
  }
  return keys;
}

/** Verifies every tree head's signature and the consistency of each with the next; returns roots by size. */
function treeHeads(b: EvidenceBundle, keys: Map<string, Buffer>, report: BundleReport): Map<number, Buffer> {
  const roots = new Map<number, Buffer>();
  let before: TreeHead | undefined;
  if (b.tree_heads.length === 0) throw new BundleFailure('bundle', 'it holds no signed tree head of the collector');
  for (const th of b.tree_heads) {
    const where = `tree head of size ${th.tree_size}`;
    const spki = keys.get(th.key_id);
    if (spki === undefined) throw new BundleFailure(where, `it names collector key ${th.key_id}, which the bundle does not hold`);
    if (!verifyTreeHead(th, spki)) throw new BundleFailure(where, `its signature does not verify with collector key ${th.key_id}: the tree head (size, root or time) was altered`);
    if (before !== undefined && th.tree_size <= before.tree_size) throw new BundleFailure(where, `it does not follow the tree head of size ${before.tree_size}`);
    roots.set(th.tree_size, Buffer.from(th.root, 'hex'));
    before = th;
  }
  // Every earlier tree head is a prefix of the newest: the log only grew between them.
  const newest = before!;
  for (const th of b.tree_heads.slice(0, -1)) {
    const where = `tree head of size ${th.tree_size}`;
    const c = b.consistency.find((x) => x.from_size === th.tree_size && x.to_size === newest.tree_size);
    if (c === undefined) throw new BundleFailure(where, `no consistency path from it to the newest tree head (size ${newest.tree_size})`);
    if (!verifyConsistency(th.tree_size, newest.tree_size, hexList(c.path, where), Buffer.from(th.root, 'hex'), Buffer.from(newest.root, 'hex'))) {
      throw new BundleFailure(where, `its consistency path to the newest tree head (size ${newest.tree_size}) does not verify: the log was not append-only between them, or the path was altered`);
    }
  }
  report.tree_heads = b.tree_heads.length;
  const { tree_size, root, unix_ms, key_id } = newest;
  report.tree_head = { tree_size, root, unix_ms, key_id };
  return roots;
}

function sidecar(s: BundleSidecar, roots: Map<number, Buffer>, ca: readonly X509Certificate[] | undefined, report: BundleReport): void {
  const keys = new Map<string, Buffer>();
  for (const k of s.keys) {
    const where = `sidecar ${s.id} key ${k.key_id}`;
    const spki = Buffer.from(k.public_key, 'base64');
    if (publicKeyFromSpki(spki) === null || keyIdOf(spki) !== k.key_id) throw new BundleFailure(where, `its public key is not an Ed25519 key whose id is ${k.key_id}: the key was altered`);
    if (k.certificate === undefined) report.notes.push(`${where} has no certification by the mesh CA`);
    else if (ca === undefined) report.notes.push(`${where} carries a certificate, but no CA to check it against (give --ca-file)`);
    else {
      const c = certifiedIdentity(k.certificate, ca, spki);
      if ('problem' in c) throw new BundleFailure(where, c.problem);
    }
    keys.set(k.key_id, spki);
  }
  let prev: BundleLink | undefined;
  for (const l of s.links) {
    const where = `sidecar ${s.id} batch ${l.batch}`;
    const from = prev !== undefined && prev.batch + 1 === l.batch ? prev.head : l.prev_head;
    if (from === undefined) throw new BundleFailure(where, 'it starts a run of links without the head before it (prev_head)');
    let head: string;
    try {
      head = linkHead(from, l);
    } catch (err) {
      throw new BundleFailure(where, `its header is malformed: ${(err as Error).message}`);
    }
    if (head !== l.head) throw new BundleFailure(where, `its head recomputed from the head before it and its header is ${head}, it says ${l.head}: the link was altered`);
    if (l.kind === 'epoch' && l.key !== undefined && keys.has(l.key) && epochRoot(keys.get(l.key)!) !== l.root) throw new BundleFailure(where, `the epoch link does not commit to key ${l.key}: the key was swapped`);
    if (l.sig !== undefined) {
      const spki = l.key === undefined ? undefined : keys.get(l.key);
      if (spki === undefined) throw new BundleFailure(where, `it is signed by key ${l.key}, which the bundle does not hold for this sidecar`);
      if (!verifyHeadSignature(l.head, l.sig, publicKeyFromSpki(spki)!)) throw new BundleFailure(where, `the signature over its head does not verify with key ${l.key}`);
    }
    prev = l;
  }
  const links = new Map(s.links.map((l) => [l.batch, l]));
  for (const w of s.witness) {
    const where = `sidecar ${s.id} batch ${w.batch} in the collector's log`;
    const l = links.get(w.batch);
    if (l?.sig === undefined) throw new BundleFailure(where, 'the bundle holds no signed link of that batch');
    const root = roots.get(w.tree_size);
    if (root === undefined) throw new BundleFailure(where, `it is proved against a tree head of size ${w.tree_size}, which the bundle does not hold`);
    const leaf = witnessLeaf({ kind: 'link', sidecar: s.id, batch: l.batch, head: l.head, key_id: l.key });
    if (!verifyInclusion(leaf, w.index, w.tree_size, hexList(w.path, where), root)) {
      throw new BundleFailure(where, `its entry (leaf ${w.index}) does not lead to the root of the tree head of size ${w.tree_size}: the link, its key or the witness path was altered`);
    }
  }
}

function record(r: BundleRecord, s: BundleSidecar | undefined): void {
  const where = `record ${r.sidecar}:${r.seq}`;
  if (s === undefined) throw new BundleFailure(where, `the bundle holds nothing of sidecar ${r.sidecar}`);
  const links = new Map(s.links.map((l) => [l.batch, l]));
  const l = links.get(r.batch);
  if (l?.kind !== 'records' || r.seq < l.first_seq || r.seq >= l.first_seq + l.count || r.index !== r.seq - l.first_seq) {
    throw new BundleFailure(where, `batch ${r.batch} of the bundle does not hold seq ${r.seq} at leaf ${r.index}`);
  }
  const leaf = leafHash(Buffer.from(r.bytes, 'base64'));
  if (!verifyInclusion(leaf, r.index, l.count, hexList(r.path, where), Buffer.from(l.root, 'hex'))) {
    throw new BundleFailure(where, `the record and its inclusion path do not lead to the Merkle root of batch ${r.batch}: the record or its path was altered`);
  }
  // Its batch chains to a signed head, which the collector's log holds.
  let b = r.batch;
  while (links.get(b)?.sig === undefined) {
    if (!links.has(b + 1)) throw new BundleFailure(where, `the chain from batch ${r.batch} ends at batch ${b} before a signed head`);
    b++;
  }
  if (!s.witness.some((w) => w.batch === b)) throw new BundleFailure(where, `the signed head of batch ${b} it chains to is not proved in the collector's log`);
}

/**
 * One bundle of several proved against the same newest tree head (`auditmesh export` asks the
 * collector for each record's proof pinned to one tree head): each key, link, witness entry, tree
 * head and record once. A link keeps `prev_head` only where the link before it is not bundled.
 */
export function mergeBundles(bundles: readonly EvidenceBundle[]): EvidenceBundle {
  if (bundles.length === 0) throw new Error('no bundle to merge');
  const byKey = <T>(items: Iterable<T>, key: (t: T) => string | number): T[] => [...new Map(Array.from(items, (t) => [key(t), t] as const)).values()];
  const newest = bundles[0].tree_heads[bundles[0].tree_heads.length - 1];
  for (const b of bundles) {
    const last = b.tree_heads[b.tree_heads.length - 1];
    if (last.tree_size !== newest.tree_size || last.root !== newest.root) throw new Error(`bundles proved against different tree heads (sizes ${newest.tree_size} and ${last.tree_size}) cannot be merged`);
  }
  const sidecars = new Map<string, BundleSidecar[]>();
  for (const b of bundles) for (const s of b.sidecars) sidecars.set(s.id, [...(sidecars.get(s.id) ?? []), s]);
  return {
    ...bundles[0],
    collector_keys: byKey(bundles.flatMap((b) => b.collector_keys), (k) => k.key_id),
    tree_heads: byKey(bundles.flatMap((b) => b.tree_heads), (t) => t.tree_size).sort((a, b) => a.tree_size - b.tree_size),
    consistency: byKey(bundles.flatMap((b) => b.consistency), (c) => c.from_size).sort((a, b) => a.from_size - b.from_size),
    sidecars: [...sidecars.values()].map((parts) => {
      const links = byKey(parts.flatMap((s) => s.links), (l) => l.batch).sort((a, b) => a.batch - b.batch);
      const batches = new Set(links.map((l) => l.batch));
      return {
        ...parts[0],
        keys: byKey(parts.flatMap((s) => s.keys), (k) => k.key_id),
        links: links.map(({ prev_head, ...l }) => (batches.has(l.batch - 1) || prev_head === undefined ? l : { ...l, prev_head })),
        witness: byKey(parts.flatMap((s) => s.witness), (w) => w.batch).sort((a, b) => a.batch - b.batch),
      };
    }),
    records: byKey(bundles.flatMap((b) => b.records), (r) => `${r.sidecar}\u0000${r.seq}`),
  };
}
