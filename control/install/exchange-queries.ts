import { GRPC_SERVER_ERROR_CODES } from '../../anomalies/exchange-summary.js';

/*
 * PromQL over the sidecars' exchange counter, shared by the alert rules and the dashboards so an
 * alert and the panel that explains it count failures the same way.
 */

/** The grpc_status values that count as failures, as the sidecar's own alerting counts them. */
const GRPC_SERVER_ERRORS = GRPC_SERVER_ERROR_CODES.join('|');

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

/** Failed over all exchanges; 0, not "no data", where nothing failed (a failure's series exists only once one happened). */
export function failedExchangeRatio(by: string, window: string, matchers: string[] = []): string {
  const all = exchangeRate(by, window, matchers);
  return `(${failedExchangeRate(by, window, matchers)} or ${all} * 0) / ${all}`;
}
