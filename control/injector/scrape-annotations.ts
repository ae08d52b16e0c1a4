/** The annotation Prometheus's usual `kubernetes-pods` scrape job keys on (a convention, not an API). */
export const PROMETHEUS_SCRAPE = 'prometheus.io/scrape';

/**
 * prometheus.io/scrape, /port and /path (and /scheme when it is https): how a Prometheus without
 * the Operator's PodMonitor and ServiceMonitor finds auditmesh's /metrics.
 */
export function prometheusScrapeAnnotations(port: number, scheme: 'http' | 'https' = 'http'): Record<string, string> {
  // The conventional kubernetes-pods job reads http when the annotation is absent.
  return { [PROMETHEUS_SCRAPE]: 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics', ...(scheme === 'https' ? { 'prometheus.io/scheme': 'https' } : {}) };
}
