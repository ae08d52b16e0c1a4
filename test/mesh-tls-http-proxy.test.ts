// test/mesh-tls-failures.test.ts again, with the http-proxy forwarding engine (--forward-engine
// http-proxy, and the engine of every WebSocket upgrade): its mesh pool fails each mTLS failure
// the same way, never in plaintext, and carries calls once the peer proves itself. The imported
// file registers its tests in this file's run; the variable is read when each test starts its
// sidecar (test/helpers/sidecar.ts), after this module has run.
import './mesh-tls-failures.test.js';

process.env.AUDITMESH_FORWARD_ENGINE = 'http-proxy';
