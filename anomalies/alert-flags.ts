import { flagsOf, readSettings, defaultsOf, decimal, fixed, whole } from '../command/settings.js';
import type { FlagSpec, FlagValues } from '../command/flags.js';
import type { AlertOptions } from './exchange-summary.js';

/** The anomaly detector's settings: the sidecar's per-edge alerts and the collector's fleet-wide ones take the same. */
export const ALERT_SETTINGS = {
  intervalMs: whole({ name: 'alert-interval-ms', default: 10_000, help: 'anomaly detection window (0: alerts off)' }),
  warmupMs: whole({ name: 'alert-warmup-ms', default: 300_000, help: 'no alerts until baselines have had this long to settle' }),
  rateFactor: decimal({ name: 'alert-rate-factor', default: 3, help: 'a window above this many times its edge baseline rate is a spike' }),
  minRate: decimal({ name: 'alert-min-rate', default: 1, help: 'rate spikes below this many req/s are ignored' }),
  errorRatioDelta: decimal({ name: 'alert-error-ratio-delta', default: 0.2, help: 'an error ratio this far above its baseline is an error spike' }),
  minRequests: whole({ name: 'alert-min-requests', default: 20, help: 'windows with fewer requests raise no error spike' }),
  /** Weight of the newest window in an edge's baseline: about the last 5 windows count. */
  alpha: fixed(0.2),
  /** Edges and methods remembered for first-seen detection. */
  maxKeys: fixed(10_000),
};

export const ALERT_FLAGS: readonly FlagSpec[] = flagsOf(ALERT_SETTINGS);

export function alertOptionsFromFlags(values: FlagValues): AlertOptions {
  return readSettings(ALERT_SETTINGS, values, {});
}

/** The flags' defaults, for embedded use (tests, the collector without a command line). */
export function defaultAlertOptions(): AlertOptions {
  return defaultsOf(ALERT_SETTINGS);
}
