/** The annotation Prometheus's usual `kubernetes-pods` scrape job keys on (a convention, not an API). */
export const PROMETHEUS_SCRAPE = 'prometheus.io/scrape';

/**
 * prometheus.io/scrape, /port and /path: how a Prometheus without the Operator's PodMonitor and
 * ServiceMonitor finds auditmesh's /metrics.
 */
export function prometheusScrapeAnnotations(port: number): Record<string, string> {
  return { [PROMETHEUS_SCRAPE]: 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' };
}
