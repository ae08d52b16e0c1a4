import { dashboard, RATE, SIDECAR, type Json } from './dashboard.js';

const POD = '{{service}} {{pod}}';
const overhead = (q: number): string => `histogram_quantile(${q}, sum by (le, service, direction, protocol) (rate(auditmesh_proxy_overhead_seconds_bucket{${SIDECAR}}[${RATE}])))`;

/** What the sidecar costs and how it copes: added latency, event loop, memory, CPU, its worker pool. */
export function sidecarHealth(): Json {
  return dashboard({
    uid: 'auditmesh-sidecar-health',
    title: 'auditmesh / Sidecar health',
    description: 'The latency auditmesh sidecars add, their event loop, memory and CPU.',
    serviceVariable: true,
    rows: [
      {
        row: 'Added latency',
        panels: [
          { title: 'p99 latency added by the sidecar', description: 'From the first request byte to forwarding it: correlation, routing and, in strict mode, waiting for the request record to be durable.', unit: 's', targets: [{ expr: overhead(0.99), legend: '{{service}} {{direction}} {{protocol}}' }] },
          { title: 'p50 latency added by the sidecar', description: 'Median of the same.', unit: 's', targets: [{ expr: overhead(0.5), legend: '{{service}} {{direction}} {{protocol}}' }] },
        ],
      },
      {
        row: 'Event loop',
        panels: [
          { title: 'Event-loop lag p99', description: 'Every exchange through a sidecar waits this long on top; the AuditmeshEventLoopLag alert fires above 100 ms for 10 minutes.', unit: 's', targets: [{ expr: `max by (service, pod) (nodejs_eventloop_lag_p99_seconds{${SIDECAR}})`, legend: POD }] },
          { title: 'Event-loop lag mean', description: 'Mean event-loop delay since the last scrape window.', unit: 's', targets: [{ expr: `max by (service, pod) (nodejs_eventloop_lag_mean_seconds{${SIDECAR}})`, legend: POD }] },
        ],
      },
      {
        row: 'Resources',
        panels: [
          { title: 'CPU', description: 'CPU seconds per second (1 = one core).', unit: 'short', width: 8, targets: [{ expr: `sum by (service, pod) (rate(process_cpu_seconds_total{${SIDECAR}}[${RATE}]))`, legend: POD }] },
          { title: 'Resident memory', description: 'Resident set size of the sidecar process.', unit: 'bytes', width: 8, targets: [{ expr: `max by (service, pod) (process_resident_memory_bytes{${SIDECAR}})`, legend: POD }] },
          { title: 'Heap used', description: 'V8 heap in use.', unit: 'bytes', width: 8, targets: [{ expr: `sum by (service, pod) (nodejs_heap_size_used_bytes{${SIDECAR}})`, legend: POD }] },
          { title: 'GC time', description: 'Share of time spent collecting garbage, by kind.', unit: 'percentunit', width: 8, targets: [{ expr: `sum by (service, kind) (rate(nodejs_gc_duration_seconds_sum{${SIDECAR}}[${RATE}]))`, legend: '{{service}} {{kind}}' }] },
          { title: 'Open file descriptors', description: 'Sockets and files the process holds.', unit: 'short', width: 8, targets: [{ expr: `max by (service, pod) (process_open_fds{${SIDECAR}})`, legend: POD }] },
          { title: 'Hashing pool queue', description: 'Batches waiting for a worker of the hashing pool, and records handed over but not yet committed.', unit: 'short', width: 8, targets: [
            { expr: `max by (service, pod) (auditmesh_pool_queue_length{${SIDECAR}})`, legend: `${POD} batches queued` },
            { expr: `max by (service, pod) (auditmesh_batcher_pending_records{${SIDECAR}})`, legend: `${POD} records pending` },
          ] },
        ],
      },
      {
        row: 'Versions',
        panels: [{ title: 'Sidecars by version', description: 'Running sidecars by auditmesh and Node version.', unit: 'short', width: 24, stacked: true, targets: [{ expr: `count by (version, node_version) (auditmesh_build_info{${SIDECAR}})`, legend: 'auditmesh {{version}} on node {{node_version}}' }] }],
      },
    ],
  });
}
