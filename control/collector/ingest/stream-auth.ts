import type { ServiceAccountCheck, TokenRefusal, WorkloadIdentity } from './service-account-tokens.js';
import type { TokenCheck } from './token-auth.js';

/**
 * Who may open a Sync stream: a bearer token of --token-file (local runs; no workload identity),
 * or a projected ServiceAccount token (Kubernetes; the workload it proves binds the sidecar id).
 */
export interface StreamAuth {
  check(authorization: string | undefined): Promise<{ ok: true; identity: WorkloadIdentity | null } | { ok: false; reason: TokenRefusal; problem: string }>;
}

const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;

export function createStreamAuth(shared: TokenCheck | null, serviceAccounts: ServiceAccountCheck | null): StreamAuth {
  return {
    async check(authorization) {
      const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
      if (bearer === undefined) return { ok: false, reason: 'missing', problem: 'no bearer token in the authorization metadata' };
      if (shared?.accepts(authorization)) return { ok: true, identity: null };
      if (serviceAccounts !== null && JWT_SHAPE.test(bearer)) return serviceAccounts.verify(bearer);
      return { ok: false, reason: 'malformed', problem: 'no accepted bearer token in the authorization metadata' };
    },
  };
}

/** The sidecar id a workload may write under: its namespace and pod name (the injector sets --sidecar-id so). */
export function sidecarIdOf(identity: WorkloadIdentity): string {
  return `${identity.namespace}/${identity.pod}`;
}
