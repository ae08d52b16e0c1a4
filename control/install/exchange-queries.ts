/**
 * PromQL over the sidecars' exchange counter, shared by the alert rules and the dashboards so an
 * alert and the panel that explains it count failures the same way.
 */

/** gRPC statuses that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS), as the sidecar's own alerting counts them. */
export const GRPC_SERVER_ERRORS = '2|4|8|13|14|15';

const selector = (matchers: string[]): string => (matchers.length === 0 ? '' : `{${matchers.join(', ')}}`);
const sum = (by: string): string => (by === '' ? 'sum' : `sum by (${by})`);

/** Exchanges per second, summed by `by` ('' for one total). */
export function exchangeRate(by: string, window: string, matchers: string[] = []): string {
  return `${sum(by)} (rate(auditmesh_requests_total${selector(matchers)}[${window}]))`;
}

/**
 * Failed exchanges per second: a 5xx, no response at all, or a gRPC server error. A series in both
 * selections (a 5xx that also carries a gRPC error status) counts once: `or` keeps the left one.
 */
export function failedExchangeRate(by: string, window: string, matchers: string[] = []): string {
  const http = selector([...matchers, 'status_class=~"5xx|error"']);
  const grpc = selector([...matchers, `grpc_status=~"${GRPC_SERVER_ERRORS}"`]);
  return `${sum(by)} (rate(auditmesh_requests_total${http}[${window}]) or rate(auditmesh_requests_total${grpc}[${window}]))`;
}
