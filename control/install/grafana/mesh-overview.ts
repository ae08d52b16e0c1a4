import { exchangeRate, failedExchangeRatio } from '../exchange-queries.js';
import { dashboard, RATE, SIDECAR, type Json } from './dashboard.js';

const EDGE = 'service, direction, peer';
const EDGE_LEGEND = '{{service}} → {{peer}} ({{direction}})';
const sel = [SIDECAR];
const quantile = (q: number, by: string): string => `histogram_quantile(${q}, sum by (le, ${by}) (rate(auditmesh_request_duration_seconds_bucket{${SIDECAR}}[${RATE}])))`;

/** Traffic, errors and latency per edge (service → peer, by direction), from every sidecar. */
export function meshOverview(): Json {
  return dashboard({
    uid: 'auditmesh-mesh-overview',
    title: 'auditmesh / Mesh overview',
    description: 'Traffic, errors and latency per edge between services, as their auditmesh sidecars see it.',
    serviceVariable: true,
    rows: [
      {
        row: 'Mesh',
        panels: [
          { title: 'Exchanges/s', description: 'All exchanges the selected sidecars proxied.', unit: 'reqps', kind: 'stat', width: 6, targets: [{ expr: exchangeRate('', RATE, sel), legend: 'exchanges/s' }] },
          { title: 'Failed', description: '5xx, no response, or a gRPC server error, as a share of all exchanges.', unit: 'percentunit', kind: 'stat', width: 6, targets: [{ expr: failedExchangeRatio('namespace', RATE, sel), legend: '{{namespace}}' }] },
          { title: 'p99 duration', description: 'Exchange duration, first request byte to last response byte.', unit: 's', kind: 'stat', width: 6, targets: [{ expr: quantile(0.99, 'namespace'), legend: '{{namespace}}' }] },
          { title: 'Open client connections', description: 'TCP connections clients hold to the sidecars now.', unit: 'short', kind: 'stat', width: 6, targets: [{ expr: `sum by (namespace) (auditmesh_tcp_connections_active{${SIDECAR}})`, legend: '{{namespace}}' }] },
        ],
      },
      {
        row: 'Per edge',
        panels: [
          { title: 'Exchanges/s per edge', description: 'Exchange rate on each edge.', unit: 'reqps', targets: [{ expr: exchangeRate(EDGE, RATE, sel), legend: EDGE_LEGEND }] },
          { title: 'Error ratio per edge', description: 'Failed exchanges (5xx, no response, gRPC server error) over all exchanges, per edge. The AuditmeshEdgeHighErrorRatio alert uses the same ratio over 5m.', unit: 'percentunit', targets: [{ expr: failedExchangeRatio(EDGE, RATE, sel), legend: EDGE_LEGEND }] },
          { title: 'p99 duration per edge', description: '99th percentile exchange duration per edge (OpenTelemetry advisory buckets: 5 ms … 10 s).', unit: 's', targets: [{ expr: quantile(0.99, EDGE), legend: EDGE_LEGEND }] },
          { title: 'p50 duration per edge', description: 'Median exchange duration per edge.', unit: 's', targets: [{ expr: quantile(0.5, EDGE), legend: EDGE_LEGEND }] },
        ],
      },
      {
        row: 'Breakdown',
        panels: [
          { title: 'By status class', description: 'Exchanges by HTTP status class; `error` had no response (reset, timeout, refused).', unit: 'reqps', stacked: true, targets: [{ expr: exchangeRate('status_class', RATE, sel), legend: '{{status_class}}' }] },
          { title: 'gRPC calls by status', description: 'gRPC calls by grpc-status code; `_OTHER` is a code outside 0–16.', unit: 'reqps', stacked: true, targets: [{ expr: exchangeRate('grpc_status', RATE, [...sel, 'grpc_status!=""']), legend: 'grpc-status {{grpc_status}}' }] },
          { title: 'By protocol', description: 'http1, h2, grpc, websocket, tunnel (CONNECT) and tcp (opaque relay).', unit: 'reqps', stacked: true, width: 8, targets: [{ expr: exchangeRate('protocol', RATE, sel), legend: '{{protocol}}' }] },
          { title: 'By method', description: 'HTTP methods; methods outside RFC 9110 are `_OTHER`.', unit: 'reqps', stacked: true, width: 8, targets: [{ expr: exchangeRate('method', RATE, sel), legend: '{{method}}' }] },
          { title: 'Bytes/s', description: 'Body bytes proxied, each way.', unit: 'Bps', width: 8, targets: [{ expr: `sum by (direction, way) (rate(auditmesh_bytes_total{${SIDECAR}}[${RATE}]))`, legend: '{{direction}} {{way}}' }] },
        ],
      },
      {
        row: 'Connections',
        panels: [
          { title: 'Client TCP connections', description: 'Connections open to the inbound and outbound listeners, and opened per second.', unit: 'short', targets: [
            { expr: `sum by (service, direction) (auditmesh_tcp_connections_active{${SIDECAR}})`, legend: '{{service}} {{direction}} open' },
            { expr: `sum by (service, direction) (rate(auditmesh_tcp_connections_opened_total{${SIDECAR}}[${RATE}]))`, legend: '{{service}} {{direction}} opened/s' },
            { expr: `sum by (service, direction) (rate(auditmesh_tcp_connections_closed_total{${SIDECAR}}[${RATE}]))`, legend: '{{service}} {{direction}} closed/s' },
          ] },
          { title: 'Relayed sessions', description: 'WebSocket sessions, CONNECT tunnels and opaque TCP connections open now, and closed per second.', unit: 'short', targets: [
            { expr: `sum by (kind, direction) (auditmesh_connections_active{${SIDECAR}})`, legend: '{{kind}} {{direction}} open' },
            { expr: `sum by (kind, direction) (rate(auditmesh_connections_opened_total{${SIDECAR}}[${RATE}]))`, legend: '{{kind}} {{direction}} opened/s' },
            { expr: `sum by (kind, direction) (rate(auditmesh_connections_closed_total{${SIDECAR}}[${RATE}]))`, legend: '{{kind}} {{direction}} closed/s' },
          ] },
        ],
      },
    ],
  });
}
