import { Registry, Gauge, collectDefaultMetrics } from 'prom-client';
import { VERSION } from './version.js';

/**
 * A registry with prom-client's default process and Node metrics (event-loop lag above all, for a
 * Node proxy) and `auditmesh_build_info`: every auditmesh process starts from this, and rules
 * select auditmesh's own targets by it (`and on (job, instance) auditmesh_build_info`).
 * `defaultLabels` go on every series the registry exposes.
 */
export function createRegistry(defaultLabels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(defaultLabels);
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'auditmesh_build_info',
    help: 'Always 1; the labels say which build and runtime this is',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  }).set({ version: VERSION, node_version: process.version }, 1);
  return registry;
}
