import { Counter, type Registry } from 'prom-client';
import { createRegistry } from '../../command/metrics-registry.js';

/** Every metric the injector exposes, defined once; labels come from fixed sets. */
export interface InjectorMetrics {
  readonly registry: Registry;
  /** Admission reviews by result (`injected`, `skipped`, `ignored`, `error`) and the policy's reason. */
  readonly admissions: Counter<'result' | 'reason'>;
  readonly certReloads: Counter<'result'>;
}

export function createInjectorMetrics(): InjectorMetrics {
  const registry = createRegistry();
  return {
    registry,
    admissions: new Counter({
      name: 'auditmesh_injector_admissions_total',
      help: 'Admission reviews answered, by result (injected, skipped, ignored, error) and reason',
      labelNames: ['result', 'reason'],
      registers: [registry],
    }),
    certReloads: new Counter({
      name: 'auditmesh_injector_cert_reloads_total',
      help: 'Serving certificate reloads, by result (reloaded, failed)',
      labelNames: ['result'],
      registers: [registry],
    }),
  };
}
