import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../../command/log.js';
import { spiffeIdOf } from '../../../ledger/spiffe-id.js';
import type { CertifyRequest, CertifyResponse } from '../../../wire/sync-wire.js';
import { BadCsr, csrPublicKey, type MeshCa } from './mesh-ca.js';
import { TOKEN_REFUSALS, type ServiceAccountCheck, type TokenRefusal } from './service-account-tokens.js';

/**
 * The Identity service's Certify: a projected ServiceAccount token (checked as ingest checks it)
 * and a CSR of the workload's Ed25519 key in, a certificate for the token's
 * spiffe://TRUST_DOMAIN/ns/NS/sa/SA out. Only a ServiceAccount token proves an identity: the
 * shared local token of --token-file does not.
 */

/** Why a certificate was refused: the `reason` label of auditmesh_collector_identity_refusals_total. */
export type CertifyRefusal = TokenRefusal | 'bad-csr' | 'no-identity';

export const CERTIFY_REFUSALS: readonly CertifyRefusal[] = [...TOKEN_REFUSALS.filter((r) => r !== 'wrong-sidecar-id'), 'bad-csr', 'no-identity'];

export interface CertifyDeps {
  ca: MeshCa;
  /** null: no ServiceAccount issuer configured, so no identity can be proven. */
  serviceAccounts: ServiceAccountCheck | null;
  trustDomain: string;
  certTtlMs: number;
  issued(): void;
  refused(reason: CertifyRefusal): void;
  log: Logger;
}

type Refused = { reason: CertifyRefusal; problem: string; status: grpc.status };

export function createCertifyHandler(deps: CertifyDeps): grpc.handleUnaryCall<CertifyRequest, CertifyResponse> {
  return (call, callback) => {
    certify(deps, call.metadata.get('authorization')[0], call.request?.csr_pem).then(
      (answer) => {
        if ('reason' in answer) {
          deps.refused(answer.reason);
          deps.log('warn', 'mesh CA refused a certificate', { reason: answer.reason, problem: answer.problem });
          callback({ code: answer.status, details: `${answer.reason}: ${answer.problem}` });
        } else {
          deps.issued();
          callback(null, answer);
        }
      },
      (err: unknown) => {
        deps.log('error', 'mesh CA failed to issue a certificate', { err: (err as Error)?.message });
        callback({ code: grpc.status.INTERNAL, details: 'the mesh CA could not issue the certificate' });
      },
    );
  };
}

async function certify(deps: CertifyDeps, authorization: unknown, csrPem: unknown): Promise<CertifyResponse | Refused> {
  if (deps.serviceAccounts === null) {
    return { reason: 'no-identity', problem: 'this collector checks no ServiceAccount tokens (--service-account-jwks), so it cannot prove an identity', status: grpc.status.FAILED_PRECONDITION };
  }
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(typeof authorization === 'string' ? authorization : '')?.[1];
  if (bearer === undefined) return { reason: 'missing', problem: 'no bearer token in the authorization metadata', status: grpc.status.UNAUTHENTICATED };
  const verdict = await deps.serviceAccounts.verify(bearer);
  if (!verdict.ok) {
    const status = verdict.reason === 'keys-unavailable' ? grpc.status.UNAVAILABLE : grpc.status.UNAUTHENTICATED;
    return { reason: verdict.reason, problem: verdict.problem, status };
  }
  let publicKey;
  try {
    publicKey = await csrPublicKey(typeof csrPem === 'string' ? csrPem : '');
  } catch (err) {
    if (err instanceof BadCsr) return { reason: 'bad-csr', problem: err.message, status: grpc.status.INVALID_ARGUMENT };
    throw err;
  }
  const spiffeId = spiffeIdOf({ trustDomain: deps.trustDomain, namespace: verdict.identity.namespace, serviceAccount: verdict.identity.serviceAccount });
  const issued = await deps.ca.issue(publicKey, { uris: [spiffeId] }, deps.certTtlMs);
  return { cert_chain_pem: issued.chainPem, ca_bundle_pem: deps.ca.certPem, not_after_unix_ms: issued.notAfterUnixMs, spiffe_id: spiffeId };
}
