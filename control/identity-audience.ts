/**
 * The audience of the ServiceAccount tokens sidecars present to the collector: the injector asks
 * the kubelet for tokens of this audience, and the collector accepts no other (a token meant for
 * the API server, or for another system, proves nothing here).
 */
export const IDENTITY_AUDIENCE = 'auditmesh';
