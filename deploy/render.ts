// `npm run render-deploy`: writes deploy/install.yaml and deploy/monitoring.yaml as `auditmesh install`
// renders them from these sources, so the checked-in manifests are what the code says.
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dispatch } from '../control/cli/main.js';

// From the repository root: the rendered files name the command line that made them, paths included.
process.chdir(fileURLToPath(new URL('..', import.meta.url)));
const RENDERED: ReadonlyArray<{ file: string; argv: string[] }> = [
  { file: 'deploy/install.yaml', argv: ['install'] },
  { file: 'deploy/monitoring.yaml', argv: ['install', '--monitoring-only', '--dashboards-dir', 'deploy/dashboards'] },
];

for (const { file, argv } of RENDERED) {
  let out = '';
  const code = await dispatch(argv, { stdout: { write: (chunk: string) => (out += chunk) }, stderr: process.stderr, env: process.env, signal: new AbortController().signal });
  if (code !== 0) throw new Error(`auditmesh ${argv.join(' ')} exited ${code}`);
  await writeFile(file, out);
}
