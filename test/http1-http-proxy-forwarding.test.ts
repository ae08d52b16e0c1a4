// test/http1-forwarding.test.ts again, with the http-proxy forwarding engine (--forward-engine
// http-proxy): what the default engine (undici) is held to, this one is held to as well. The
// imported file registers its tests in this file's run; the variable is read when each test
// starts its sidecar (test/helpers/sidecar.ts), after this module has run.
import './http1-forwarding.test.js';

process.env.AUDITMESH_FORWARD_ENGINE = 'http-proxy';
