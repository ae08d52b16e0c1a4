// The collector under test, in its own process (bench/ingest.ts and bench/certify.ts start it):
// ports 0, its store in the folder given. Prints {"grpc":N,"http":N} once listening; on SIGTERM
// closes, prints {"times":…} (a JetStream replica's publish, compare-and-set and index time so far)
// and exits. RECONCILE=0: stored runs are not reconciled (bench/ingest.ts's baseline). With EXPORT_OTLP_URL (bench/export.ts), it exports over OTLP http/protobuf to that receiver.
//   ingest-serve.ts STORE_DIR                      --insecure: plaintext, no credential
//   ingest-serve.ts STORE_DIR NATS_URLS            --insecure, one replica of the JetStream tier on those servers
//   ingest-serve.ts STORE_DIR mtls CA_DIR TOKENS   the mesh CA of CA_DIR: gRPC over TLS 1.3, Sync needs a
//                                                  client certificate of that CA and a token of the file TOKENS
//   ingest-serve.ts STORE_DIR identity CA_DIR TOKENS JWKS ISSUER   and Certify for ServiceAccount tokens of ISSUER
import { createCollector, type CollectorConfig } from '../control/collector/collector.js';

const [storeDir, mode, caDir, tokenFile, jwks, issuer] = process.argv.slice(2);
if (storeDir === undefined) throw new Error('usage: ingest-serve.ts STORE_DIR [NATS_URLS | mtls|identity CA_DIR TOKENS [JWKS ISSUER]]');
const exportUrl = process.env.EXPORT_OTLP_URL;
const base: CollectorConfig = { grpcPort: 0, httpPort: 0, bind: '127.0.0.1', storeDir, insecure: true, reconcile: process.env.RECONCILE !== '0', ...(exportUrl === undefined ? {} : { exportOtlp: { protocol: 'http/protobuf' as const, url: exportUrl, pollMs: 50 } }) };
const config: CollectorConfig =
  mode === undefined
    ? base
    : mode.startsWith('nats://')
      ? { ...base, jetstream: { urls: mode.split(',') } }
      : { ...base, insecure: false, tokenFile, identity: { caDir, createCa: false }, ...(mode === 'identity' ? { serviceAccounts: { jwks, issuer } } : {}) };
const collector = await createCollector(config);
process.stdout.write(JSON.stringify({ grpc: collector.grpcPort, http: collector.httpPort }) + '\n');
process.once('SIGTERM', () =>
  void collector.close().then(() => {
    process.stdout.write(JSON.stringify({ times: collector.tier?.times() ?? null }) + '\n', () => process.exit(0));
  }),
);
