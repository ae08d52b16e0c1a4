import type { ReadScope } from './record-namespace.js';
import { createReadPolicy, type ReadPolicy } from './read-policy.js';
import { createReaderTokens, type ReaderTokens } from './reader-tokens.js';
import { createServiceAccountCheck, type ServiceAccountCheck, type ServiceAccountKeys, type TokenRefusal } from '../ingest/service-account-tokens.js';

/**
 * Who may read /v1/ and what: a bearer token of --reader-token-file (its own scope), or a
 * ServiceAccount token with audience `auditmesh-read` whose identity --read-policy grants
 * namespaces. 401 for no or an unaccepted credential, 403 for a proven reader granted nothing.
 */

/** The audience of the ServiceAccount tokens readers present (`kubectl create token SA --audience auditmesh-read`). */
export const READ_AUDIENCE = 'auditmesh-read';

/** Why a read was refused: the `reason` label of auditmesh_collector_read_refusals_total. */
export type ReadRefusal = 'missing' | 'unknown-token' | 'wrong-audience' | 'expired' | 'not-yet-valid' | 'other-issuer' | 'unknown-key' | 'bad-signature' | 'malformed' | 'keys-unavailable' | 'not-granted' | 'out-of-scope';

export const READ_REFUSALS = Object.keys({
  missing: true, 'unknown-token': true, 'wrong-audience': true, expired: true, 'not-yet-valid': true, 'other-issuer': true, 'unknown-key': true,
  'bad-signature': true, malformed: true, 'keys-unavailable': true, 'not-granted': true, 'out-of-scope': true,
} satisfies Record<ReadRefusal, true>) as ReadRefusal[];

export type ReadVerdict = { ok: true; scope: ReadScope; reader: string } | { ok: false; status: 401 | 403; reason: ReadRefusal; problem: string };

export interface ReadAccess {
  authorize(authorization: string | undefined): Promise<ReadVerdict>;
}

export interface ReadAccessSources {
  tokens: ReaderTokens | null;
  /** ServiceAccount tokens checked with audience READ_AUDIENCE, not bound to a pod. */
  serviceAccounts: ServiceAccountCheck | null;
  policy: ReadPolicy | null;
  trustDomain: string;
}

/** The SPIFFE trust domain when none is configured (--trust-domain). */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;

export function createReadAccess(src: ReadAccessSources): ReadAccess {
  return {
    async authorize(authorization) {
      const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
      if (bearer === undefined) return { ok: false, status: 401, reason: 'missing', problem: 'reading needs authorization: Bearer TOKEN (a reader token, or a ServiceAccount token with audience auditmesh-read)' };
      const scope = src.tokens?.scopeOf(bearer) ?? null;
      if (scope !== null) return { ok: true, scope, reader: 'reader-token' };
      if (src.serviceAccounts === null || !JWT_SHAPE.test(bearer)) return { ok: false, status: 401, reason: 'unknown-token', problem: 'the bearer token is not an accepted reader token' };
      const verdict = await src.serviceAccounts.verify(bearer);
      if (!verdict.ok) return { ok: false, status: 401, reason: readReason(verdict.reason), problem: verdict.problem };
      const spiffeId = `spiffe://${src.trustDomain}/ns/${verdict.identity.namespace}/sa/${verdict.identity.serviceAccount}`;
      const granted = src.policy?.scopeOf(spiffeId) ?? null;
      if (granted === null) return { ok: false, status: 403, reason: 'not-granted', problem: `${spiffeId} may read no namespace: the read policy grants it none` };
      return { ok: true, scope: granted, reader: spiffeId };
    },
  };
}

/** A sidecar-token refusal as a read refusal: the ones about pods and sidecar ids cannot happen here. */
function readReason(r: TokenRefusal): ReadRefusal {
  return r === 'not-pod-bound' || r === 'wrong-sidecar-id' ? 'malformed' : r;
}

/** The read settings of the collector's config. */
export interface ReadSettings {
  readerTokenFile?: string;
  readPolicy?: string;
  serviceAccounts?: ServiceAccountKeys;
  trustDomain?: string;
}

/** Read access from the collector's settings (files read now: a config error throws at boot). */
export function readAccessFrom(s: ReadSettings, log?: (level: 'info' | 'error', msg: string, fields: Record<string, unknown>) => void): ReadAccess {
  if (s.readPolicy !== undefined && s.serviceAccounts === undefined) {
    throw new Error('--read-policy grants ServiceAccount identities: it needs the service-account settings (--service-account-jwks and --service-account-issuer outside a pod)');
  }
  return createReadAccess({
    tokens: s.readerTokenFile === undefined ? null : createReaderTokens(s.readerTokenFile, log),
    serviceAccounts: s.serviceAccounts === undefined ? null : createServiceAccountCheck(s.serviceAccounts, { audience: READ_AUDIENCE, podBound: false }),
    policy: s.readPolicy === undefined ? null : createReadPolicy(s.readPolicy, log),
    trustDomain: s.trustDomain ?? DEFAULT_TRUST_DOMAIN,
  });
}
