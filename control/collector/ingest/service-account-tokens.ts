import { readFileSync, statSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import { IDENTITY_AUDIENCE } from '../../identity-audience.js';

/**
 * Projected ServiceAccount tokens checked as the API server's issuer signed them, with jose:
 * signature (RS256 or ES256) against the issuer's published keys, `iss`, `aud` = `auditmesh`,
 * `exp` and `nbf`, and the pod the kubelet bound the token to (the `kubernetes.io` claim). Only a
 * TokenReview would also prove the pod still exists; tokens live an hour, so that is the bound.
 */

/** Where the kubelet mounts a pod's own API token and the cluster CA (kube-api-access). */
export const IN_CLUSTER_CREDENTIALS = '/var/run/secrets/kubernetes.io/serviceaccount';
/** The API server's service-account issuer discovery keys, from inside the cluster. */
export const IN_CLUSTER_JWKS_URL = 'https://kubernetes.default.svc/openid/v1/jwks';
/** Nodes' clocks disagree a little; Kubernetes itself allows this much. */
const CLOCK_TOLERANCE_S = 60;

/** Why a token was refused: the `reason` label of auditmesh_collector_token_refusals_total. */
export type TokenRefusal = 'missing' | 'malformed' | 'wrong-audience' | 'expired' | 'not-yet-valid' | 'other-issuer' | 'unknown-key' | 'bad-signature' | 'not-pod-bound' | 'wrong-sidecar-id' | 'keys-unavailable';

/** Every TokenRefusal, so the counter starts each at 0; a Record over the type keeps the two in step. */
export const TOKEN_REFUSALS = Object.keys({
  missing: true, malformed: true, 'wrong-audience': true, expired: true, 'not-yet-valid': true, 'other-issuer': true,
  'unknown-key': true, 'bad-signature': true, 'not-pod-bound': true, 'wrong-sidecar-id': true, 'keys-unavailable': true,
} satisfies Record<TokenRefusal, true>) as TokenRefusal[];

/** The workload a token proves: its namespace, pod and service account. */
export interface WorkloadIdentity {
  namespace: string;
  pod: string;
  podUid: string;
  serviceAccount: string;
  /** Seconds since the epoch. */
  expiresAt: number;
}

export type TokenVerdict = { ok: true; identity: WorkloadIdentity } | { ok: false; reason: TokenRefusal; problem: string };

export interface ServiceAccountKeys {
  /** A JWKS file (re-read when it changes) or an https URL. */
  jwks: string;
  issuer: string;
  /** For an https URL: the CA bundle that signs its server, and a bearer token file to present (re-read per fetch). */
  caFile?: string;
  bearerTokenFile?: string;
}

export interface ServiceAccountCheck {
  verify(token: string): Promise<TokenVerdict>;
}

/**
 * `audience` defaults to the sidecars' (IDENTITY_AUDIENCE); `podBound: false` also accepts a token
 * of a service account alone (`kubectl create token SA --audience …`, as readers use), pod '' then.
 */
export function createServiceAccountCheck(keys: ServiceAccountKeys, options: { audience?: string; podBound?: boolean } = {}): ServiceAccountCheck {
  const getKey = /^https?:\/\//.test(keys.jwks) ? remoteKeys(keys) : fileKeys(keys.jwks);
  const audience = options.audience ?? IDENTITY_AUDIENCE;
  const podBound = options.podBound ?? true;
  return {
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, getKey, { issuer: keys.issuer, audience, algorithms: ['RS256', 'ES256'], clockTolerance: CLOCK_TOLERANCE_S, requiredClaims: ['exp'] });
        const k8s = payload['kubernetes.io'] as { namespace?: string; pod?: { name?: string; uid?: string }; serviceaccount?: { name?: string } } | undefined;
        if (typeof k8s?.namespace !== 'string' || (podBound && typeof k8s.pod?.name !== 'string') || typeof k8s.serviceaccount?.name !== 'string') {
          return { ok: false, reason: 'not-pod-bound', problem: 'the token is not bound to a pod (no kubernetes.io namespace, pod and serviceaccount claims): only a projected token mounted by the kubelet is accepted' };
        }
        return { ok: true, identity: { namespace: k8s.namespace, pod: k8s.pod?.name ?? '', podUid: k8s.pod?.uid ?? '', serviceAccount: k8s.serviceaccount.name, expiresAt: payload.exp! } };
      } catch (err) {
        return refusal(err, keys.issuer, audience);
      }
    },
  };
}

function refusal(err: unknown, issuer: string, audience: string): TokenVerdict {
  const no = (reason: TokenRefusal, problem: string): TokenVerdict => ({ ok: false, reason, problem });
  if (err instanceof errors.JWTExpired) return no('expired', `the token expired (${err.message})`);
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return no('wrong-audience', `the token's audience is not "${audience}"`);
    if (err.claim === 'iss') return no('other-issuer', `the token was issued by another issuer than ${issuer}`);
    if (err.claim === 'nbf') return no('not-yet-valid', 'the token is not valid yet (nbf is in the future)');
    return no('malformed', `the token's ${err.claim} claim is invalid: ${err.message}`);
  }
  if (err instanceof errors.JWKSNoMatchingKey) return no('unknown-key', "the token's signing key is not among the issuer's published keys");
  if (err instanceof errors.JWSSignatureVerificationFailed) return no('bad-signature', 'the token signature does not verify');
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || !(err instanceof errors.JOSEError)) {
    return no('keys-unavailable', `the issuer's keys could not be fetched: ${(err as Error).message}`);
  }
  return no('malformed', `not a valid token: ${err.message}`);
}

/** A local JWKS file, read again when its modification time changes (a mounted ConfigMap updated in place). */
function fileKeys(file: string): JWTVerifyGetKey {
  let mtimeMs = -1;
  let keys: JWTVerifyGetKey | undefined;
  return (header, token) => {
    const m = statSync(file).mtimeMs;
    if (keys === undefined || m !== mtimeMs) {
      keys = createLocalJWKSet(JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet);
      mtimeMs = m;
    }
    return keys(header, token);
  };
}

/** The issuer's keys over HTTPS, cached by jose and fetched again for a key id it does not know. */
function remoteKeys(keys: ServiceAccountKeys): JWTVerifyGetKey {
  const dispatcher = keys.caFile === undefined ? undefined : new Agent({ connect: { ca: readFileSync(keys.caFile) } });
  const fetchKeys = (url: string, options: { headers: Headers; signal: AbortSignal }): Promise<Response> => {
    const headers = Object.fromEntries(options.headers.entries());
    // The API server's token for the collector itself rotates: read it for every fetch.
    if (keys.bearerTokenFile !== undefined) headers.authorization = `Bearer ${readFileSync(keys.bearerTokenFile, 'utf8').trim()}`;
    return undiciFetch(url, { headers, signal: options.signal, dispatcher }) as unknown as Promise<Response>;
  };
  return createRemoteJWKSet(new URL(keys.jwks), { [customFetch]: fetchKeys });
}
