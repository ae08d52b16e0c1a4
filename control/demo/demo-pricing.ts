import * as grpc from '@grpc/grpc-js';
import type { DemoApp } from './demo-apps.js';

/**
 * pricing: a gRPC service (`demo.Pricing/Quote`, unary). Messages are JSON rather than protobuf
 * so the demo ships no .proto: the sidecar reads only gRPC's framing, never the payload.
 */
interface Quote {
  item: number;
  cents?: number;
}

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): Quote => JSON.parse(bytes.toString()) as Quote,
};

const PRICING_SERVICE: grpc.ServiceDefinition = {
  Quote: {
    path: '/demo.Pricing/Quote',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

/** Every 11th item has no price: a NOT_FOUND status, so the demo shows gRPC errors too. */
export async function startPricing(): Promise<DemoApp> {
  const server = new grpc.Server();
  server.addService(PRICING_SERVICE, {
    Quote: (call: grpc.ServerUnaryCall<Quote, Quote>, cb: grpc.sendUnaryData<Quote>) => {
      const item = call.request.item;
      if (item % 11 === 0) return cb({ code: grpc.status.NOT_FOUND, details: `no price for item ${item}` });
      cb(null, { item, cents: 100 + ((item * 37) % 900) });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}

const PricingClient = grpc.makeGenericClientConstructor(PRICING_SERVICE, 'Pricing');

/**
 * A pricing client that reaches `pricing:50051` through its own sidecar's outbound listener, as
 * iptables would send it there: plain h2c, routed by :authority. The port is read at first use.
 */
export function pricingClient(outboundPort: () => number): { quote(item: number, headers: Record<string, string>): Promise<number | null>; close(): void } {
  let client: grpc.Client | undefined;
  return {
    quote(item, headers) {
      client ??= new PricingClient(`127.0.0.1:${outboundPort()}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'pricing:50051' });
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) if (v !== '') metadata.set(k, v);
      return new Promise((resolve) => {
        (client as unknown as Record<string, (...a: unknown[]) => void>).Quote!({ item }, metadata, { deadline: Date.now() + 2000 }, (err: grpc.ServiceError | null, reply?: Quote) =>
          resolve(err ? null : (reply?.cents ?? null)),
        );
      });
    },
    close: () => client?.close(),
  };
}
