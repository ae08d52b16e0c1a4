// The collector under test, in its own process (bench/ingest.ts starts it): --insecure, ports 0,
// its store in the folder given. Prints {"grpc":N,"http":N} once listening; stops on SIGTERM.
// With EXPORT_OTLP_URL (bench/export.ts), it exports over OTLP http/protobuf to that receiver.
import { createCollector } from '../control/collector/collector.js';

const storeDir = process.argv[2];
if (storeDir === undefined) throw new Error('usage: ingest-serve.ts STORE_DIR');
const exportUrl = process.env.EXPORT_OTLP_URL;
const collector = await createCollector({ grpcPort: 0, httpPort: 0, bind: '127.0.0.1', storeDir, insecure: true, ...(exportUrl === undefined ? {} : { exportOtlp: { protocol: 'http/protobuf' as const, url: exportUrl, pollMs: 50 } }) });
process.stdout.write(JSON.stringify({ grpc: collector.grpcPort, http: collector.httpPort }) + '\n');
process.once('SIGTERM', () => void collector.close().then(() => process.exit(0)));
