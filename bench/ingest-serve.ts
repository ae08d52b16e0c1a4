// The collector under test, in its own process (bench/ingest.ts starts it): --insecure, ports 0,
// its store in the folder given; with NATS URLs as a second argument, one replica of the JetStream
// tier. Prints {"grpc":N,"http":N} once listening; on SIGTERM closes, prints {"times":…} (the tier's
// publish, compare-and-set and index time so far) and exits.
import { createCollector } from '../control/collector/collector.js';

const storeDir = process.argv[2];
const urls = process.argv[3];
if (storeDir === undefined) throw new Error('usage: ingest-serve.ts STORE_DIR [NATS_URLS]');
const collector = await createCollector({ grpcPort: 0, httpPort: 0, bind: '127.0.0.1', storeDir, insecure: true, ...(urls === undefined ? {} : { jetstream: { urls: urls.split(',') } }) });
process.stdout.write(JSON.stringify({ grpc: collector.grpcPort, http: collector.httpPort }) + '\n');
process.once('SIGTERM', () =>
  void collector.close().then(() => {
    process.stdout.write(JSON.stringify({ times: collector.tier?.times() ?? null }) + '\n', () => process.exit(0));
  }),
);
