/*
 * Every (result, reason) an admission review can end with: the closed set the injector's
 * admissions counter is labelled by, each pair created at 0 so an alert or panel over it reads 0,
 * not "no data", until the first review. A Record over each union makes the compiler name a
 * reason added to the type and missing here.
 */

/** Why the policy left a pod as it was. */
export type SkipReason = 'mirror-pod' | 'host-network' | 'already-injected' | 'opted-out' | 'not-enabled' | 'invalid-annotations';
/** Why the webhook did not apply the policy at all: not a pod's creation, or no pod in the request. */
export type IgnoreReason = 'not-pod-create' | 'no-pod-spec';

const keys = <K extends string>(set: Record<K, true>): K[] => Object.keys(set) as K[];

const SKIP_REASONS = keys<SkipReason>({ 'mirror-pod': true, 'host-network': true, 'already-injected': true, 'opted-out': true, 'not-enabled': true, 'invalid-annotations': true });
const IGNORE_REASONS = keys<IgnoreReason>({ 'not-pod-create': true, 'no-pod-spec': true });

/** The reasons each result comes with; `error` is the webhook failing on a pod it then admits unchanged. */
export const ADMISSION_OUTCOMES: Readonly<Record<'injected' | 'skipped' | 'ignored' | 'error', readonly string[]>> = {
  injected: ['injected'],
  skipped: SKIP_REASONS,
  ignored: IGNORE_REASONS,
  error: ['internal'],
};
