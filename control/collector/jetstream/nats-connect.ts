import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';

/** Where the tier's NATS servers are and how to reach them (--jetstream, --jetstream-creds, --jetstream-ca-file). */
export interface JetStreamConfig {
  /** nats://host:port, one or more. */
  urls: string[];
  /** A NATS credentials file (user JWT and nkey seed). */
  credsFile?: string;
  /** CA bundle (PEM) the servers' TLS certificates are checked against; with it, TLS is required. */
  caFile?: string;
  /** How long a shard lease lasts without renewal (default DEFAULT_LEASE_MS). */
  leaseMs?: number;
}

/** `nats://a:4222,nats://b:4222` -> the URLs; throws naming the one that is not a nats:// or tls:// URL. */
export function parseJetStreamUrls(text: string): string[] {
  const urls = text.split(',').map((u) => u.trim()).filter((u) => u !== '');
  if (urls.length === 0) throw new Error('expected one or more nats://HOST:PORT, comma-separated');
  for (const u of urls) if (!/^(nats|tls):\/\/[^\s/]+:\d+\/?$/.test(u)) throw new Error(`expected nats://HOST:PORT, got ${JSON.stringify(u)}`);
  return urls;
}

/** Connects for good: reconnects forever, to any of the servers, while NATS nodes come and go. */
export function connectJetStream(config: JetStreamConfig, name: string, reconnect = true): Promise<NatsConnection> {
  return connect({
    servers: config.urls,
    name,
    reconnect,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: reconnect,
    // No error object (and stack trace) made up front for every request and publish ack, only
    // for the ones that fail (a profile of a replica at ingest: 1-2% of its busy time went to them).
    noAsyncTraces: true,
    ...(config.credsFile === undefined ? {} : { authenticator: credsAuthenticator(readFileSync(config.credsFile)) }),
    ...(config.caFile === undefined ? {} : { tls: { caFile: config.caFile } }),
  });
}
