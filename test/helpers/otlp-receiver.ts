import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { ExecutionContext } from 'ava';

/**
 * An OTLP logs receiver built from the official protobuf definitions (test/fixtures/otlp-proto):
 * gRPC (LogsService/Export, loaded with @grpc/proto-loader), HTTP with protobuf bodies (decoded
 * with protobufjs) and HTTP with JSON bodies (the spec's JSON mapping: lowerCamelCase names, trace
 * and span ids as hex). It can go away and come back on the same port: while away, the port
 * resets every connection (as a host whose receiver is down answers), and stays this receiver's,
 * so no other test's listener takes it meanwhile.
 */

const ROOT = fileURLToPath(new URL('../fixtures/otlp-proto/', import.meta.url));
const SERVICE_PROTO = 'opentelemetry/proto/collector/logs/v1/logs_service.proto';

export type ReceiverProtocol = 'grpc' | 'http/protobuf' | 'http/json';

/** A received log record, the same shape whichever protocol carried it. */
export interface ReceivedLog {
  uid: string;
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
  scope: string;
  body: unknown;
  eventName: string;
  severityNumber: number;
  severityText: string;
  timeUnixNano: string;
  observedTimeUnixNano: string;
  traceId: string;
  spanId: string;
}

export interface OtlpReceiver {
  /** The endpoint for OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (HTTP: with /v1/logs). */
  url: string;
  port: number;
  logs: ReceivedLog[];
  /** Export requests answered with success. */
  requests: number;
  /** The headers of the last HTTP export request (HTTP protocols only). */
  lastHeaders: http.IncomingHttpHeaders;
  /** Goes away: every connection is reset until start(). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Closes the port for good. */
  close(): Promise<void>;
}

/** Holds a port while the receiver is away: accepts and resets every connection. */
function resetting(port: number): Promise<net.Server> {
  const server = net.createServer((socket) => socket.resetAndDestroy());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** Goes away (a resetting port) and comes back (`listen`), the port held throughout. */
function awayAndBack(r: { port: number }, listen: () => Promise<void>, unlisten: () => Promise<void>): Pick<OtlpReceiver, 'start' | 'stop' | 'close'> {
  let away: net.Server | undefined;
  const release = async (): Promise<void> => {
    const s = away;
    away = undefined;
    if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  return {
    async start() {
      await release();
      await listen();
    },
    async stop() {
      await unlisten();
      away = await resetting(r.port);
    },
    async close() {
      await unlisten();
      await release();
    },
  };
}

type Obj = Record<string, unknown>;
/** A field by its proto name or its JSON (lowerCamelCase) name. */
const field = (o: unknown, name: string): unknown => {
  if (o === null || typeof o !== 'object') return undefined;
  const rec = o as Obj;
  return rec[name] ?? rec[name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())];
};
const list = (o: unknown, name: string): unknown[] => (field(o, name) as unknown[] | undefined) ?? [];
const hex = (v: unknown): string => (typeof v === 'string' ? v : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : '');

/** An AnyValue as a plain value: strings, numbers (int64 as number), booleans, arrays, objects. */
function anyValue(v: unknown): unknown {
  for (const k of ['string_value', 'bool_value', 'double_value']) if (field(v, k) !== undefined) return field(v, k);
  const i = field(v, 'int_value');
  if (i !== undefined) return Number(i);
  const arr = field(v, 'array_value');
  if (arr !== undefined) return list(arr, 'values').map(anyValue);
  const kv = field(v, 'kvlist_value');
  if (kv !== undefined) return keyValues(list(kv, 'values'));
  const bytes = field(v, 'bytes_value');
  return bytes === undefined ? undefined : hex(bytes);
}

function keyValues(kvs: unknown[]): Obj {
  return Object.fromEntries(kvs.map((kv) => [field(kv, 'key') as string, anyValue(field(kv, 'value'))]));
}

/** Every log record of an ExportLogsServiceRequest (decoded from protobuf or JSON). */
export function receivedLogs(request: unknown): ReceivedLog[] {
  return list(request, 'resource_logs').flatMap((rl) => {
    const resource = keyValues(list(field(rl, 'resource'), 'attributes'));
    return list(rl, 'scope_logs').flatMap((sl) => {
      const scope = String(field(field(sl, 'scope'), 'name') ?? '');
      return list(sl, 'log_records').map((lr): ReceivedLog => {
        const attributes = keyValues(list(lr, 'attributes'));
        return {
          uid: String(attributes['log.record.uid']),
          attributes,
          resource,
          scope,
          body: anyValue(field(lr, 'body')),
          eventName: String(field(lr, 'event_name') ?? ''),
          severityNumber: Number(field(lr, 'severity_number') ?? 0),
          severityText: String(field(lr, 'severity_text') ?? ''),
          timeUnixNano: String(field(lr, 'time_unix_nano') ?? ''),
          observedTimeUnixNano: String(field(lr, 'observed_time_unix_nano') ?? ''),
          traceId: hex(field(lr, 'trace_id')),
          spanId: hex(field(lr, 'span_id')),
        };
      });
    });
  });
}

const loadOptions = { keepCase: true, longs: String, enums: Number, defaults: false, oneofs: true, includeDirs: [ROOT] };

function protobufRequestType(): protobuf.Type {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('/') ? target : ROOT + target);
  root.loadSync(SERVICE_PROTO, { keepCase: true });
  return root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest');
}

export async function startOtlpReceiver(t: ExecutionContext, protocol: ReceiverProtocol): Promise<OtlpReceiver> {
  const receiver = protocol === 'grpc' ? grpcReceiver() : httpReceiver(protocol);
  await receiver.start();
  t.teardown(() => receiver.close());
  return receiver;
}

function grpcReceiver(): OtlpReceiver {
  const definition = protoLoader.loadSync(SERVICE_PROTO, loadOptions);
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { opentelemetry: { proto: { collector: { logs: { v1: { LogsService: grpc.ServiceClientConstructor } } } } } };
  const service = pkg.opentelemetry.proto.collector.logs.v1.LogsService.service;
  let server: grpc.Server | undefined;
  const r = {
    url: '',
    port: 0,
    logs: [] as ReceivedLog[],
    requests: 0,
    lastHeaders: {},
  };
  const listen = async (): Promise<void> => {
    server = new grpc.Server();
    server.addService(service, {
      Export: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        r.logs.push(...receivedLogs(call.request));
        r.requests++;
        callback(null, {});
      },
    });
    r.port = await new Promise<number>((resolve, reject) => server!.bindAsync(`127.0.0.1:${r.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
    r.url = `http://127.0.0.1:${r.port}`;
  };
  const unlisten = async (): Promise<void> => {
    server?.forceShutdown();
    server = undefined;
  };
  return Object.assign(r, awayAndBack(r, listen, unlisten));
}

function httpReceiver(protocol: 'http/protobuf' | 'http/json'): OtlpReceiver {
  const type = protobufRequestType();
  let server: http.Server | undefined;
  const r = {
    url: '',
    port: 0,
    logs: [] as ReceivedLog[],
    requests: 0,
    lastHeaders: {} as http.IncomingHttpHeaders,
  };
  const listen = async (): Promise<void> => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const json = protocol === 'http/json';
        const wanted = json ? 'application/json' : 'application/x-protobuf';
        if (req.url !== '/v1/logs' || req.method !== 'POST' || req.headers['content-type'] !== wanted) {
          res.writeHead(400).end(`expected POST /v1/logs with ${wanted}`);
          return;
        }
        const request = json ? (JSON.parse(body.toString('utf8')) as unknown) : type.toObject(type.decode(body), { longs: String, enums: Number, oneofs: true });
        r.logs.push(...receivedLogs(request));
        r.requests++;
        r.lastHeaders = req.headers;
        res.writeHead(200, { 'content-type': wanted }).end(json ? '{}' : Buffer.alloc(0));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(r.port, '127.0.0.1', () => resolve());
    });
    r.port = (server.address() as { port: number }).port;
    r.url = `http://127.0.0.1:${r.port}/v1/logs`;
  };
  const unlisten = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (s === undefined) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  return Object.assign(r, awayAndBack(r, listen, unlisten));
}
