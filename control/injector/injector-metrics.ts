import { Counter, type Registry } from 'prom-client';
import { createRegistry } from '../../command/metrics-registry.js';
import { initialiseLabels } from '../../command/label-values.js';
import { ADMISSION_OUTCOMES } from './admission-outcomes.js';

/** Every metric the injector exposes, defined once; labels come from fixed sets, each value at 0 from the start. */
export interface InjectorMetrics {
  readonly registry: Registry;
  /** Admission reviews by result (`injected`, `skipped`, `ignored`, `error`) and the policy's reason. */
  readonly admissions: Counter<'result' | 'reason'>;
  readonly certReloads: Counter<'result'>;
}

export function createInjectorMetrics(): InjectorMetrics {
  const registry = createRegistry();
  const admissions = new Counter({
    name: 'auditmesh_injector_admissions_total',
    help: 'Admission reviews answered, by result (injected, skipped, ignored, error) and reason',
    labelNames: ['result', 'reason'],
    registers: [registry],
  });
  for (const [result, reasons] of Object.entries(ADMISSION_OUTCOMES)) for (const reason of reasons) admissions.inc({ result, reason }, 0);
  const certReloads = new Counter({
    name: 'auditmesh_injector_cert_reloads_total',
    help: 'Serving certificate reloads, by result (reloaded, failed)',
    labelNames: ['result'],
    registers: [registry],
  });
  initialiseLabels(certReloads, 'result', ['reloaded', 'failed']);
  return { registry, admissions, certReloads };
}
