import { Metadata } from '@grpc/grpc-js';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPLogExporter as GrpcLogExporter } from '@opentelemetry/exporter-logs-otlp-grpc';
import { OTLPLogExporter as JsonLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as ProtobufLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';

/**
 * The OTLP logs exporter of the protocol chosen, from the official OpenTelemetry JS packages
 * (one 0.223 line: the last for Node 20). What the configuration leaves out, the exporters read
 * from the standard variables themselves: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, _HEADERS, _TIMEOUT,
 * _COMPRESSION, _INSECURE, _CERTIFICATE ..., falling back to the OTEL_EXPORTER_OTLP_* ones.
 */

export const OTLP_PROTOCOLS = ['grpc', 'http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export interface OtlpTransportConfig {
  protocol: OtlpProtocol;
  /** The endpoint; absent: from the environment (for HTTP, the generic endpoint gets /v1/logs appended). */
  url?: string;
  /** Headers (gRPC metadata); absent: from the environment. */
  headers?: Record<string, string>;
  /** One export's deadline; absent: from the environment, else the exporters' 10 s. */
  timeoutMillis?: number;
}

/** The protocol the standard variables choose: the logs one, then the generic one, else the spec's default, http/protobuf. */
export function otlpProtocolFrom(env: Readonly<Record<string, string | undefined>>): OtlpProtocol {
  const named = (env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim();
  if (named === '') return 'http/protobuf';
  if (!(OTLP_PROTOCOLS as readonly string[]).includes(named)) {
    throw new Error(`OTEL_EXPORTER_OTLP_${env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL === undefined ? '' : 'LOGS_'}PROTOCOL: expected one of ${OTLP_PROTOCOLS.join(', ')}, got ${JSON.stringify(named)}`);
  }
  return named as OtlpProtocol;
}

export function createOtlpLogExporter(config: OtlpTransportConfig): LogRecordExporter {
  const common = { ...(config.url === undefined ? {} : { url: config.url }), ...(config.timeoutMillis === undefined ? {} : { timeoutMillis: config.timeoutMillis }) };
  switch (config.protocol) {
    case 'grpc': {
      let metadata: Metadata | undefined;
      if (config.headers !== undefined) {
        metadata = new Metadata();
        for (const [k, v] of Object.entries(config.headers)) metadata.set(k, v);
      }
      return new GrpcLogExporter({ ...common, ...(metadata === undefined ? {} : { metadata }) });
    }
    case 'http/protobuf':
      return new ProtobufLogExporter({ ...common, ...(config.headers === undefined ? {} : { headers: config.headers }) });
    case 'http/json':
      return new JsonLogExporter({ ...common, ...(config.headers === undefined ? {} : { headers: config.headers }) });
  }
}

/** Exports once; resolves when the receiver accepted the request, rejects with why not. */
export function exportLogs(exporter: LogRecordExporter, logs: ReadableLogRecord[]): Promise<void> {
  return new Promise((resolve, reject) =>
    exporter.export(logs, (result) => {
      if (result.code === ExportResultCode.SUCCESS) resolve();
      else reject(result.error ?? new Error('the OTLP export failed'));
    }),
  );
}
