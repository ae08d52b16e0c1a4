import { type FlagSpec, type FlagValues, parseFlags } from '../command/flags.js';
import type { AlertOptions } from './exchange-summary.js';

/** Weight of the newest window in an edge's baseline: about the last 5 windows count. */
const ALERT_EWMA_ALPHA = 0.2;
/** Edges and methods remembered for first-seen detection. */
const ALERT_MAX_KEYS = 10_000;

/** The anomaly detector's flags: the sidecar's per-edge alerts and the collector's fleet-wide ones take the same. */
export const ALERT_FLAGS: readonly FlagSpec[] = [
  { name: 'alert-interval-ms', type: 'int', default: '10000', help: 'anomaly detection window (0: alerts off)' },
  { name: 'alert-warmup-ms', type: 'int', default: '300000', help: 'no alerts until baselines have had this long to settle' },
  { name: 'alert-rate-factor', type: 'number', default: '3', help: 'a window above this many times its edge baseline rate is a spike' },
  { name: 'alert-min-rate', type: 'number', default: '1', help: 'rate spikes below this many req/s are ignored' },
  { name: 'alert-error-ratio-delta', type: 'number', default: '0.2', help: 'an error ratio this far above its baseline is an error spike' },
  { name: 'alert-min-requests', type: 'int', default: '20', help: 'windows with fewer requests raise no error spike' },
];

export function alertOptionsFromFlags(values: FlagValues): AlertOptions {
  return {
    intervalMs: values['alert-interval-ms'] as number,
    warmupMs: values['alert-warmup-ms'] as number,
    rateFactor: values['alert-rate-factor'] as number,
    minRate: values['alert-min-rate'] as number,
    errorRatioDelta: values['alert-error-ratio-delta'] as number,
    minRequests: values['alert-min-requests'] as number,
    alpha: ALERT_EWMA_ALPHA,
    maxKeys: ALERT_MAX_KEYS,
  };
}

/** The flags' defaults, for embedded use (tests, the collector without a command line). */
export function defaultAlertOptions(): AlertOptions {
  return alertOptionsFromFlags(parseFlags(ALERT_FLAGS, [], {}).values);
}
