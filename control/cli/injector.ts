import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatHelp, parseFlags, port, UsageError, type FlagSpec } from '../../command/flags.js';
import { createLogger, type Logger } from '../../command/log.js';
import { createAdminServer } from '../../command/admin-server.js';
import { createAdmissionServer, type AdmissionServer } from '../injector/admission-server.js';
import { createInjectorMetrics } from '../injector/injector-metrics.js';
import { injectionHandlers } from '../injector/injection-webhook.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../injector/inject-flags.js';
import type { InjectOptions } from '../injector/sidecar-containers.js';
import { untilAborted, type CommandIO } from '../../command/io.js';

export const INJECTOR_FLAGS: readonly FlagSpec[] = [
  { name: 'port', type: 'int', default: '9443', help: 'HTTPS port of the admission webhook', env: 'AUDITMESH_INJECTOR_PORT' },
  { name: 'admin-port', type: 'int', default: '9444', help: 'plain HTTP /metrics, /livez, /readyz', env: 'AUDITMESH_INJECTOR_ADMIN_PORT' },
  { name: 'bind', type: 'string', default: '0.0.0.0', help: 'listen address', env: 'AUDITMESH_INJECTOR_BIND' },
  { name: 'tls-cert', type: 'string', default: '/etc/auditmesh/tls/tls.crt', help: 'serving certificate (PEM); re-read when it changes' },
  { name: 'tls-key', type: 'string', default: '/etc/auditmesh/tls/tls.key', help: 'its private key (PEM)' },
  { name: 'cert-reload-ms', type: 'int', default: '10000', help: 'how often the certificate files are checked for a new pair' },
  { name: 'max-body-bytes', type: 'int', default: '3145728', help: 'larger admission requests are refused with 413' },
  { name: 'request-timeout-ms', type: 'int', default: '10000', help: 'a request must arrive whole within this time' },
  { name: 'log-level', type: 'string', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)', env: 'AUDITMESH_INJECTOR_LOG_LEVEL' },
  ...INJECT_FLAGS,
];

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
  let values;
  let options: InjectOptions;
  try {
    const parsed = parseFlags(INJECTOR_FLAGS, argv, io.env);
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    values = parsed.values;
    options = injectOptionsFromFlags(values);
    port(values, 'port');
    port(values, 'admin-port');
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh injector: ${err.message}\n(see auditmesh injector --help)\n`);
    return 2;
  }
  const log = createLogger(values['log-level'] as 'info', (line) => io.stderr.write(line));
  const metrics = createInjectorMetrics();
  let admission: AdmissionServer;
  try {
    admission = await createAdmissionServer({
      certFile: values['tls-cert'] as string,
      keyFile: values['tls-key'] as string,
      certReloadMs: values['cert-reload-ms'] as number,
      maxBodyBytes: values['max-body-bytes'] as number,
      requestTimeoutMs: values['request-timeout-ms'] as number,
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
  const bind = values.bind as string;
  const ports = { port: await listen(admission.server, values.port as number, bind), admin: await listen(admin, values['admin-port'] as number, bind) };
  log('info', 'injector listening', { ...ports, image: options.image, sidecar_mode: options.sidecarMode });
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
