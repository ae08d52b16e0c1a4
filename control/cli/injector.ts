import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, readSettings, tcpPort, text, whole, type SettingsOf } from '../../command/settings.js';
import { createLogger, type Logger } from '../../command/log.js';
import { createAdminServer } from '../../command/admin-server.js';
import { createAdmissionServer, type AdmissionServer } from '../injector/admission-server.js';
import { createInjectorMetrics } from '../injector/injector-metrics.js';
import { injectionHandlers } from '../injector/injection-webhook.js';
import { INJECT_SETTINGS } from '../injector/inject-flags.js';
import { readCaBundle } from '../injector/ca-bundle.js';
import { untilAborted, type CommandIO } from '../../command/io.js';

export const INJECTOR_SETTINGS = {
  port: tcpPort({ name: 'port', default: 9443, help: 'HTTPS port of the admission webhook', env: 'AUDITMESH_INJECTOR_PORT' }),
  adminPort: tcpPort({ name: 'admin-port', default: 9444, help: 'plain HTTP /metrics, /livez, /readyz', env: 'AUDITMESH_INJECTOR_ADMIN_PORT' }),
  bind: text({ name: 'bind', default: '0.0.0.0', help: 'listen address', env: 'AUDITMESH_INJECTOR_BIND' }),
  certFile: text({ name: 'tls-cert', default: '/etc/auditmesh/tls/tls.crt', help: 'serving certificate (PEM); re-read when it changes' }),
  keyFile: text({ name: 'tls-key', default: '/etc/auditmesh/tls/tls.key', help: 'its private key (PEM)' }),
  certReloadMs: whole({ name: 'cert-reload-ms', default: 10_000, help: 'how often the certificate files are checked for a new pair' }),
  maxBodyBytes: whole({ name: 'max-body-bytes', default: 3_145_728, help: 'larger admission requests are refused with 413' }),
  requestTimeoutMs: whole({ name: 'request-timeout-ms', default: 10_000, help: 'a request must arrive whole within this time' }),
  logLevel: choice<'info' | 'warn' | 'error' | 'silent'>({ name: 'log-level', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)', env: 'AUDITMESH_INJECTOR_LOG_LEVEL' }),
  caFile: optionalText({ name: 'ca-file', help: "the mesh CA bundle (PEM certificates only) embedded in every injected pod, read at start; the install mounts its Secret's ca.crt. Without it the sidecars get none and ship without mTLS", env: 'AUDITMESH_INJECTOR_CA_FILE' }),
  policy: INJECT_SETTINGS,
};

export const INJECTOR_FLAGS: readonly FlagSpec[] = flagsOf(INJECTOR_SETTINGS);

export const INJECTOR_HELP = formatHelp(
  'auditmesh injector [flags]',
  'Runs the sidecar-injection mutating admission webhook over HTTPS. Pods created in namespaces\nlabelled auditmesh.io/inject=enabled (or labelled auditmesh.io/inject=true themselves) get\nauditmesh-init and auditmesh-proxy. On an internal error a pod is admitted unchanged, with a\nwarning, and the error is counted.',
  INJECTOR_FLAGS,
);

/** `auditmesh injector`: serves until aborted (SIGTERM/SIGINT), then closes and exits 0. */
export async function injectorMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(INJECTOR_HELP);
    return 0;
  }
  let settings: SettingsOf<typeof INJECTOR_SETTINGS>;
  try {
    const parsed = parseFlags(INJECTOR_FLAGS, argv, io.env);
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    settings = readSettings(INJECTOR_SETTINGS, parsed.values, io.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh injector: ${err.message}\n(see auditmesh injector --help)\n`);
    return 2;
  }
  const { policy, caFile, ...values } = settings;
  const log = createLogger(values.logLevel, (line) => io.stderr.write(line));
  let options = policy;
  try {
    if (caFile !== undefined) options = { ...policy, caBundle: await readCaBundle(caFile) };
  } catch (err) {
    io.stderr.write(`auditmesh injector: ${(err as Error).message}\n`);
    return 1;
  }
  const metrics = createInjectorMetrics();
  let admission: AdmissionServer;
  try {
    admission = await createAdmissionServer({
      certFile: values.certFile,
      keyFile: values.keyFile,
      certReloadMs: values.certReloadMs,
      maxBodyBytes: values.maxBodyBytes,
      requestTimeoutMs: values.requestTimeoutMs,
      handlers: injectionHandlers(options, metrics),
      onInternalError(err, request) {
        metrics.admissions.inc({ result: 'error', reason: 'internal' });
        log('error', 'injection failed; pod admitted unchanged', { uid: request.uid, namespace: request.namespace, error: err.message });
      },
      onCertReload(result, err) {
        metrics.certReloads.inc({ result });
        log(result === 'reloaded' ? 'info' : 'error', result === 'reloaded' ? 'serving certificate reloaded' : 'serving certificate not reloaded; keeping the previous one', err ? { error: err.message } : {});
      },
    });
  } catch (err) {
    io.stderr.write(`auditmesh injector: cannot load the serving certificate: ${(err as Error).message}\n`);
    return 1;
  }
  const admin = createAdminServer({ registry: metrics.registry, ready: () => ({ ok: true }), subscribe: null });
  const bind = values.bind;
  const ports = { port: await listen(admission.server, values.port, bind), admin: await listen(admin, values.adminPort, bind) };
  log('info', 'injector listening', { ...ports, image: options.image, sidecar_mode: options.sidecarMode, ca_bundle: options.caBundle === undefined ? 'none' : caFile });
  await untilAborted(io.signal);
  await stop(admission, admin, log);
  return 0;
}

function listen(server: Server, portNumber: number, bind: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(portNumber, bind, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

async function stop(admission: AdmissionServer, admin: Server, log: Logger): Promise<void> {
  log('info', 'stopping');
  await admission.close();
  await new Promise<void>((resolve) => {
    admin.close(() => resolve());
    admin.closeAllConnections();
  });
}
