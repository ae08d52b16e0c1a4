import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet, type CryptoKey } from 'jose';

/** Whom a token names, as the `kubernetes.io` claim of a projected ServiceAccount token does. */
export interface TokenSubject {
  namespace: string;
  pod: { name: string; uid: string };
  serviceAccount: { name: string; uid: string };
}

export interface TokenOptions {
  audience: string;
  expirationSeconds: number;
  /** Seconds since the epoch; default now. */
  now?: number;
  /** Claims to replace, for tokens a verifier must refuse (another issuer, not yet valid ...). */
  override?: Record<string, unknown>;
}

/** The API server's service-account token issuer: signs projected tokens and publishes its keys. */
export interface TokenIssuer {
  readonly issuer: string;
  /** The audience tokens for the API server itself carry (a kube-api-access token). */
  readonly apiAudience: string;
  readonly alg: 'RS256' | 'ES256';
  jwks(): JSONWebKeySet;
  sign(subject: TokenSubject, options: TokenOptions): Promise<string>;
}

export const CLUSTER_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/**
 * A token issuer with a key of its own. Tokens are shaped as kube-apiserver shapes them: iss, sub
 * `system:serviceaccount:NS:SA`, aud (a list), iat, nbf, exp, jti and the `kubernetes.io` claim.
 */
export async function createTokenIssuer(options: { alg?: 'RS256' | 'ES256'; issuer?: string } = {}): Promise<TokenIssuer> {
  const alg = options.alg ?? 'RS256';
  const issuer = options.issuer ?? CLUSTER_ISSUER;
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const published = { keys: [{ ...jwk, kid, alg, use: 'sig' }] };
  return {
    issuer,
    apiAudience: issuer,
    alg,
    jwks: () => structuredClone(published),
    sign: (subject, o) => signToken(privateKey, alg, kid, issuer, subject, o),
  };
}

function signToken(key: CryptoKey, alg: string, kid: string, issuer: string, s: TokenSubject, o: TokenOptions): Promise<string> {
  const now = o.now ?? Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    sub: `system:serviceaccount:${s.namespace}:${s.serviceAccount.name}`,
    aud: [o.audience],
    iat: now,
    nbf: now,
    exp: now + o.expirationSeconds,
    jti: randomUUID(),
    'kubernetes.io': { namespace: s.namespace, pod: s.pod, serviceaccount: s.serviceAccount },
    ...o.override,
  };
  return new SignJWT(claims).setProtectedHeader({ alg, kid }).sign(key);
}
