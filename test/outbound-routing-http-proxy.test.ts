// test/outbound-routing.test.ts again, with the http-proxy forwarding engine (--forward-engine
// http-proxy): absolute-form and Host-header routing to upstreams its keep-alive agent pools. The
// imported file registers its tests in this file's run; the variable is read when each test
// starts its sidecar (test/helpers/sidecar.ts), after this module has run.
import './outbound-routing.test.js';

process.env.AUDITMESH_FORWARD_ENGINE = 'http-proxy';
