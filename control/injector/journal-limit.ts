/**
 * The sidecar's journal bound from the size of its volume. The journal's bound counts LMDB pages
 * in use; the volume also holds LMDB's free pages (the data file never shrinks), its lock file and
 * the keys, and the kubelet evicts the pod once the emptyDir passes its sizeLimit. So the bound is
 * at most JOURNAL_SHARE of the volume: the bound, not an eviction, is what applies.
 */

/** The journal's bound as a share of its volume: 4/5. */
const JOURNAL_SHARE_NUMERATOR = 4;
const JOURNAL_SHARE_DENOMINATOR = 5;
/** Smaller journal volumes are refused: LMDB and a few batches need room. */
export const MIN_JOURNAL_VOLUME_BYTES = 16 * 1024 * 1024;

// A Kubernetes resource.Quantity, as apimachinery's regular expression accepts it.
export const QUANTITY_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$/;

const BINARY: Record<string, number> = { Ki: 1, Mi: 2, Gi: 3, Ti: 4, Pi: 5, Ei: 6 };
const DECIMAL: Record<string, number> = { n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };

/** A quantity in bytes, rounded up as Kubernetes rounds a Quantity's Value(); null if it is not one. */
export function quantityBytes(quantity: string): number | null {
  const m = QUANTITY_RE.exec(quantity);
  if (m === null) return null;
  const [, number, , suffix = ''] = m;
  const value = (quantity.startsWith('-') ? -1 : 1) * Number(number);
  let bytes: number;
  if (suffix in BINARY) bytes = value * 1024 ** BINARY[suffix];
  else if (suffix in DECIMAL) bytes = value * 10 ** DECIMAL[suffix];
  else bytes = value * 10 ** Number(suffix.slice(1));
  return Number.isFinite(bytes) ? Math.ceil(bytes) : null;
}

/** `--journal-limit-bytes` for a journal volume of `sizeLimit` (a quantity the caller checked). */
export function journalLimitBytes(sizeLimit: string): number {
  const bytes = quantityBytes(sizeLimit);
  if (bytes === null) throw new Error(`not a quantity: ${JSON.stringify(sizeLimit)}`);
  return Math.floor((bytes * JOURNAL_SHARE_NUMERATOR) / JOURNAL_SHARE_DENOMINATOR);
}

/** Whether a quantity is a journal volume size the injector accepts. */
export function isJournalVolumeSize(quantity: string): boolean {
  return (quantityBytes(quantity) ?? 0) >= MIN_JOURNAL_VOLUME_BYTES;
}
