import type { Resource } from '@opentelemetry/resources';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { workerData } from 'piscina';
import { collectedRecord } from '../../api/record-query.js';
import { BatchBlob } from '../../store/batch-blob.js';
import { sidecarResource, toLogRecord } from '../otlp-log-record.js';
import { createOtlpLogExporter, exportLogs, type OtlpTransportConfig } from '../otlp-transport.js';

/**
 * Piscina worker: the per-record work of the OTLP export, off the collector's event loop. It holds
 * the official exporter of the protocol chosen (workerData: the transport), maps a chunk of one
 * chain's stored batches to log records, and sends them; the event loop only reads the batches
 * from the store and moves the cursor once this answers, in order (otlp-export.ts): chunks may be
 * mapped and sent by several workers at once.
 *
 * Input (otlp-export.ts): the chunk's stored batch values, as the store holds them
 * (store/batch-blob.ts), one after another in one transferred buffer; per batch where it ends,
 * when its sidecar sealed it and the identity its stream proved.
 */
export interface ExportChunkTask {
  sidecar: { id: string; incarnation: string; service: string; key_id: string };
  blobs: ArrayBuffer;
  batches: Array<{ end: number; sealedUnixMs: number; identity?: string }>;
}

/** Piscina does not carry an error's code back: a refusal is a value. */
export type ExportChunkOutcome = { ok: true; exported: number } | { ok: false; error: string; stage: 'export' | 'store' };

const transport = workerData as OtlpTransportConfig;
let exporter: LogRecordExporter | undefined;
/** One resource object per chain and identity, so the serializer groups each one's records under it. */
const resources = new Map<string, Resource>();

function resourceOf(sidecar: ExportChunkTask['sidecar'], identity: string | undefined): Resource {
  const key = `${sidecar.id}\u0000${sidecar.incarnation}\u0000${sidecar.service}\u0000${sidecar.key_id}\u0000${identity ?? ''}`;
  let r = resources.get(key);
  if (r === undefined) {
    // Chains come and go (incarnations): a bounded cache, cleared when full rather than tracked.
    if (resources.size >= 4096) resources.clear();
    resources.set(key, (r = sidecarResource(sidecar, identity)));
  }
  return r;
}

/** The chunk's records as log records; throws (a BlobError) on a malformed stored batch. */
export function logRecordsOf(task: ExportChunkTask): ReadableLogRecord[] {
  const { sidecar } = task;
  const all = Buffer.from(task.blobs);
  const logs: ReadableLogRecord[] = [];
  let start = 0;
  for (const b of task.batches) {
    const blob = new BatchBlob(all.subarray(start, b.end));
    start = b.end;
    const resource = resourceOf(sidecar, b.identity);
    for (let i = 0; i < blob.count; i++) {
      const rec = collectedRecord({ sidecar: sidecar.id, incarnation: sidecar.incarnation, seq: blob.firstSeq + i, bytes: blob.bytes(i), ...(b.identity === undefined ? {} : { identity: b.identity }) });
      if (rec !== null) logs.push(toLogRecord(rec, resource, b.sealedUnixMs));
    }
  }
  return logs;
}

export default async function exportChunk(task: ExportChunkTask): Promise<ExportChunkOutcome> {
  let logs: ReadableLogRecord[];
  try {
    logs = logRecordsOf(task);
  } catch (err) {
    return { ok: false, error: (err as Error)?.message ?? String(err), stage: 'store' };
  }
  if (logs.length === 0) return { ok: true, exported: 0 };
  exporter ??= createOtlpLogExporter(transport);
  try {
    await exportLogs(exporter, logs);
    return { ok: true, exported: logs.length };
  } catch (err) {
    // A fresh exporter for the retry: grpc-js would otherwise wait out its channel's reconnect backoff (up to 2 min) after the receiver is back.
    const old = exporter;
    exporter = undefined;
    old.shutdown().catch(() => {});
    return { ok: false, error: (err as Error)?.message ?? String(err), stage: 'export' };
  }
}
