import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

const PROTO = fileURLToPath(new URL('../fixtures/echo.proto', import.meta.url));
const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
const pkg = grpc.loadPackageDefinition(definition) as unknown as { test: { Echo: grpc.ServiceClientConstructor } };
export const EchoClient = pkg.test.Echo;
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export interface EchoRequest {
  text?: string;
  count?: number;
  payload?: Buffer;
  status?: number;
  delay_ms?: number;
  reply_bytes?: number;
}
export interface EchoReply {
  text: string;
  index: number;
  payload: Buffer;
}

/** What the test server saw, for assertions on the upstream side. */
export interface ServerLog {
  metadata: grpc.Metadata[];
  cancelled: string[];
  writesBlocked: number;
  received: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function fail(req: EchoRequest): grpc.ServiceError | null {
  if (!req.status) return null;
  return Object.assign(new Error(`failed on purpose: ${req.text}`), { code: req.status, details: `failed on purpose: ${req.text}`, metadata: new grpc.Metadata() }) as grpc.ServiceError;
}

/** A real grpc-js server of the Echo service on 127.0.0.1; stopped when the test ends. */
export async function startEchoServer(t: ExecutionContext): Promise<{ port: number; log: ServerLog; server: grpc.Server }> {
  const log: ServerLog = { metadata: [], cancelled: [], writesBlocked: 0, received: 0 };
  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_MESSAGE_BYTES });
  const reply = (req: EchoRequest, index = 0): EchoReply => ({ text: req.text ?? '', index, payload: Buffer.alloc(req.reply_bytes ?? 0, 7) });
  server.addService(EchoClient.service, {
    Unary: async (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
      log.metadata.push(call.metadata);
      call.on('cancelled', () => log.cancelled.push('Unary'));
      if (call.request.delay_ms) await sleep(call.request.delay_ms);
      if (call.cancelled) return;
      const err = fail(call.request);
      const trailer = new grpc.Metadata();
      trailer.set('x-trailer', 'done');
      call.sendMetadata(Object.assign(new grpc.Metadata(), {}));
      if (err) return cb(err);
      cb(null, reply(call.request), trailer);
    },
    ServerStream: async (call: grpc.ServerWritableStream<EchoRequest, EchoReply>) => {
      log.metadata.push(call.metadata);
      call.on('cancelled', () => log.cancelled.push('ServerStream'));
      for (let i = 0; i < (call.request.count ?? 0); i++) {
        if (call.cancelled) return;
        if (call.request.delay_ms) await sleep(call.request.delay_ms);
        if (!call.write(reply(call.request, i))) {
          log.writesBlocked++;
          await new Promise((r) => call.once('drain', r));
        }
      }
      const err = fail(call.request);
      if (err) return call.destroy(err);
      call.end();
    },
    ClientStream: (call: grpc.ServerReadableStream<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
      let n = 0;
      let last: EchoRequest = {};
      call.on('data', (req: EchoRequest) => {
        n++;
        log.received++;
        last = req;
      });
      call.on('end', () => cb(null, { text: `${n}:${last.text ?? ''}`, index: n, payload: Buffer.alloc(0) }));
      call.on('cancelled', () => log.cancelled.push('ClientStream'));
    },
    Bidi: (call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) => {
      let i = 0;
      call.on('data', (req: EchoRequest) => {
        log.received++;
        if (!call.write(reply(req, i++))) log.writesBlocked++;
      });
      call.on('end', () => call.end());
      call.on('cancelled', () => log.cancelled.push('Bidi'));
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  return { port, log, server };
}

/** A grpc-js client of the Echo service at 127.0.0.1:port; closed when the test ends. */
export function echoClient(t: ExecutionContext, port: number, options: grpc.ChannelOptions = {}): grpc.Client & Record<string, (...args: unknown[]) => unknown> {
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // Each test's client gets its own connections: grpc-js otherwise shares subchannels by
    // address across clients, and a port reused by another test's server would be reached.
    'grpc.use_local_subchannel_pool': 1,
    ...options,
  });
  t.teardown(() => client.close());
  return client as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
}

/** A unary call as a promise: the reply, or the ServiceError. */
export function unary(client: grpc.Client, req: EchoRequest, opts: { metadata?: grpc.Metadata; deadlineMs?: number } = {}): Promise<{ reply?: EchoReply; error?: grpc.ServiceError; trailers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let outcome: { reply?: EchoReply; error?: grpc.ServiceError } = {};
    const call = (client as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>).Unary!(
      req,
      opts.metadata ?? new grpc.Metadata(),
      opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs },
      (error: grpc.ServiceError | null, reply?: EchoReply) => {
        outcome = { reply, error: error ?? undefined };
      },
    );
    // grpc-js calls back before it emits 'status': settle on the status, trailers and all.
    call.on('status', (s: grpc.StatusObject) => resolve({ ...outcome, trailers: s.metadata }));
  });
}
