/** What bench/serve.ts can start in a child process. */
export const SERVER_KINDS = ['upstream', 'http-proxy', 'undici', 'sidecar-off', 'sidecar-async', 'sidecar-async-no-metrics', 'sidecar-strict'] as const;
export type ServerKind = (typeof SERVER_KINDS)[number];
