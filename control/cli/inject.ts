import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../injector/inject-flags.js';
import { injectManifest } from '../injector/inject-manifest.js';
import { readCaBundle } from '../injector/ca-bundle.js';
import { MESH_CA_SECRET } from '../install/mesh-ca-secret.js';
import type { InjectOptions } from '../injector/sidecar-containers.js';
import type { CommandIO } from '../../command/io.js';
import { collectorAddress, DEFAULT_NAMESPACE } from '../install/install-options.js';
import { OUTPUT_FLAG, writeObjects } from './manifest-output.js';

const INJECT_COMMAND_FLAGS: readonly FlagSpec[] = [
  { name: 'filename', short: 'f', type: 'string', help: 'the manifest (YAML or JSON, several documents allowed); - reads stdin', env: false },
  OUTPUT_FLAG,
  { name: 'ca-file', type: 'string', help: "the mesh CA bundle embedded in every injected pod (the install's Secret auditmesh-mesh-ca, key ca.crt); without it the pods get none and their sidecars cannot reach a collector that runs the mesh CA", env: false },
  ...INJECT_FLAGS,
];

export const INJECT_HELP = formatHelp(
  'auditmesh inject -f FILE [flags] > injected.yaml',
  'Injects auditmesh-init and auditmesh-proxy into the pods of the Pods, Deployments, StatefulSets,\nDaemonSets, ReplicaSets, Jobs and CronJobs in a manifest, offline, with the same policy as the\nwebhook (pods labelled auditmesh.io/inject=false are left alone). The sidecars ship to the\ndefault install\'s collector (auditmesh-collector.auditmesh-system.svc:9400) unless --collector\nsays otherwise. Other objects pass through.\nWhat was done to each object is reported on stderr.',
  INJECT_COMMAND_FLAGS,
);

/** `auditmesh inject -f FILE`: 0 when the manifest was read (whatever was injected), 1 when it could not be, 2 on bad usage. */
export async function injectMain(argv: readonly string[], io: CommandIO, stdin: () => Promise<string> = readStdin): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(INJECT_HELP);
    return 0;
  }
  let file: string;
  let caFile: string | undefined;
  let options: InjectOptions;
  let format: 'yaml' | 'json';
  try {
    const { values, positionals } = parseFlags(INJECT_COMMAND_FLAGS, argv, io.env);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (values.filename === undefined) throw new UsageError('-f FILE is required');
    file = values.filename as string;
    // Offline injection ships where the webhook's sidecars ship: the default install's collector.
    options = injectOptionsFromFlags({ ...values, collector: values.collector ?? collectorAddress(DEFAULT_NAMESPACE) });
    format = values.output as 'yaml' | 'json';
    caFile = values['ca-file'] as string | undefined;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh inject: ${err.message}\n(see auditmesh inject --help)\n`);
    return 2;
  }
  let objects: unknown[];
  try {
    const text = file === '-' ? await stdin() : await readFile(file, 'utf8');
    const docs = parseAllDocuments(text);
    const broken = docs.find((d) => d.errors.length > 0);
    if (broken !== undefined) throw new Error(broken.errors[0]!.message);
    objects = docs.map((d) => d.toJS() as unknown).filter((o) => o !== null && o !== undefined);
  } catch (err) {
    io.stderr.write(`auditmesh inject: cannot read ${file === '-' ? 'stdin' : file}: ${(err as Error).message}\n`);
    return 1;
  }
  if (caFile === undefined) {
    io.stderr.write(`auditmesh inject: no --ca-file: the pods get no mesh CA bundle, and their sidecars cannot reach an install's collector, which serves the mesh CA's TLS; give its ca.crt (kubectl -n ${DEFAULT_NAMESPACE} get secret ${MESH_CA_SECRET} -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt)\n`);
  } else {
    try {
      options = { ...options, caBundle: await readCaBundle(caFile) };
    } catch (err) {
      io.stderr.write(`auditmesh inject: ${(err as Error).message}\n`);
      return 1;
    }
  }
  const { objects: injected, entries } = injectManifest(objects, options);
  for (const e of entries) {
    if (e.result === null) continue;
    io.stderr.write(`auditmesh inject: ${e.object}: ${e.result.injected ? 'injected' : `not injected (${e.result.reason})`}\n`);
    for (const w of e.result.warnings) io.stderr.write(`  ${w}\n`);
  }
  writeObjects(io, injected, format);
  return 0;
}

async function readStdin(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  return text;
}
