/** One RFC 6902 operation; the injector only ever adds. */
export interface JsonPatchOp {
  op: 'add';
  path: string;
  value: unknown;
}

/** A JSON Pointer segment (RFC 6901): `~` → `~0`, `/` → `~1` (annotation keys hold slashes). */
export function pointerSegment(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * Ops that set `entries` in the map at `path` (labels, annotations), creating the map when the
 * object has none: `add` on a missing parent fails in the API server, and a second `add` of the
 * whole map would replace the first.
 */
export function setInMap(ops: JsonPatchOp[], path: string, existing: Record<string, string> | undefined, entries: Record<string, string>): void {
  if (existing === undefined) {
    ops.push({ op: 'add', path, value: { ...entries } });
    return;
  }
  for (const [key, value] of Object.entries(entries)) ops.push({ op: 'add', path: `${path}/${pointerSegment(key)}`, value });
}

/** Ops that insert `items` at the front of the array at `path` (in order), or create it. */
export function prepend(ops: JsonPatchOp[], path: string, existing: readonly unknown[] | undefined, items: readonly unknown[]): void {
  if (existing === undefined || existing.length === 0) {
    if (items.length > 0) ops.push({ op: 'add', path, value: [...items] });
    return;
  }
  items.forEach((item, i) => ops.push({ op: 'add', path: `${path}/${i}`, value: item }));
}

/** Ops that append `items` to the array at `path`, or create it. */
export function append(ops: JsonPatchOp[], path: string, existing: readonly unknown[] | undefined, items: readonly unknown[]): void {
  if (existing === undefined || existing.length === 0) {
    if (items.length > 0) ops.push({ op: 'add', path, value: [...items] });
    return;
  }
  for (const item of items) ops.push({ op: 'add', path: `${path}/-`, value: item });
}

/** Prefixes every op's path, to patch a pod template inside a workload (`/spec/template`). */
export function underPath(prefix: string, ops: readonly JsonPatchOp[]): JsonPatchOp[] {
  return ops.map((o) => ({ ...o, path: prefix + o.path }));
}

/**
 * Applies `add` operations to a deep copy of `doc`, as the API server would (RFC 6902 §4.1):
 * the parent must exist, `-` appends, an index inserts. Throws naming the op that does not apply.
 */
export function applyPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  const root = structuredClone(doc) as unknown;
  for (const op of ops) {
    const segments = op.path.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = segments.pop();
    if (op.path === '' || last === undefined) throw new Error(`json patch: cannot add at the root (${op.path})`);
    let parent: unknown = root;
    for (const s of segments) {
      parent = parent !== null && typeof parent === 'object' ? (parent as Record<string, unknown>)[s] : undefined;
      if (parent === undefined) throw new Error(`json patch: no parent for ${op.path}`);
    }
    const value = structuredClone(op.value);
    if (Array.isArray(parent)) {
      const index = last === '-' ? parent.length : Number(last);
      if (!/^(\d+|-)$/.test(last) || index > parent.length) throw new Error(`json patch: bad array index in ${op.path}`);
      parent.splice(index, 0, value);
    } else if (parent !== null && typeof parent === 'object') {
      (parent as Record<string, unknown>)[last] = value;
    } else {
      throw new Error(`json patch: parent of ${op.path} is not a container`);
    }
  }
  return root as T;
}
