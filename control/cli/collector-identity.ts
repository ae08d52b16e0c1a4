import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { UsageError } from '../../command/flags.js';
import { IN_CLUSTER_CREDENTIALS, IN_CLUSTER_JWKS_URL, type ServiceAccountKeys } from '../collector/ingest/service-account-tokens.js';

/**
 * The service-account settings of `auditmesh collector`: the flags, or in a pod (the kubelet set
 * KUBERNETES_SERVICE_HOST and mounted the collector's own API token and the cluster CA) the API
 * server's issuer discovery, fetched with those, and the issuer named by the collector's own
 * token. Undefined when neither applies (shared tokens or --insecure only).
 */
export function serviceAccountKeys(flags: { issuer: string | undefined; jwks: string | undefined }, env: Readonly<Record<string, string | undefined>>): ServiceAccountKeys | undefined {
  const { jwks: jwksFlag, issuer: issuerFlag } = flags;
  const ownToken = join(IN_CLUSTER_CREDENTIALS, 'token');
  const inCluster = env.KUBERNETES_SERVICE_HOST !== undefined && existsSync(ownToken);
  if (jwksFlag === undefined && !inCluster) {
    if (issuerFlag !== undefined) throw new UsageError('--service-account-issuer needs --service-account-jwks FILE|URL outside a Kubernetes pod');
    return undefined;
  }
  const jwks = jwksFlag ?? IN_CLUSTER_JWKS_URL;
  const issuer = issuerFlag ?? (inCluster ? issuerOf(ownToken) : undefined);
  if (issuer === undefined) throw new UsageError('--service-account-jwks needs --service-account-issuer URL (the iss of the tokens to accept)');
  if (!/^https?:\/\//.test(jwks) && !existsSync(jwks)) throw new UsageError(`--service-account-jwks: no such file ${jwks}`);
  // The in-cluster credentials serve the API server's own URL; another URL is fetched as it is.
  const apiServer = inCluster && jwks.startsWith('https://kubernetes.default.svc/');
  return { jwks, issuer, ...(apiServer ? { caFile: join(IN_CLUSTER_CREDENTIALS, 'ca.crt'), bearerTokenFile: ownToken } : {}) };
}

/** The issuer of the collector's own projected token: the cluster's. */
function issuerOf(tokenFile: string): string {
  try {
    const iss = decodeJwt(readFileSync(tokenFile, 'utf8').trim()).iss;
    if (typeof iss === 'string') return iss;
  } catch (err) {
    throw new UsageError(`cannot read the cluster's issuer from ${tokenFile}: ${(err as Error).message}; give --service-account-issuer`);
  }
  throw new UsageError(`${tokenFile} names no issuer; give --service-account-issuer`);
}

/** The collector's own namespace in a pod (the kubelet mounts it beside its token): its Service names are in it. */
export function podNamespace(env: Readonly<Record<string, string | undefined>>): string | undefined {
  if (env.KUBERNETES_SERVICE_HOST === undefined) return undefined;
  const file = join(IN_CLUSTER_CREDENTIALS, 'namespace');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

/** In a pod with its API token: where the collector lists the cluster's Services for the mesh directory (its ClusterRole allows it). */
export function kubeServicesOf(env: Readonly<Record<string, string | undefined>>): { apiUrl: string; caFile: string; bearerTokenFile: string } | undefined {
  const ownToken = join(IN_CLUSTER_CREDENTIALS, 'token');
  if (env.KUBERNETES_SERVICE_HOST === undefined || !existsSync(ownToken)) return undefined;
  return { apiUrl: 'https://kubernetes.default.svc', caFile: join(IN_CLUSTER_CREDENTIALS, 'ca.crt'), bearerTokenFile: ownToken };
}
