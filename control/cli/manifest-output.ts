import { stringify } from 'yaml';
import type { CommandIO } from '../../command/io.js';

/** Prints Kubernetes objects as one YAML stream (`kubectl apply -f -`), or one JSON object per line. */
export function writeObjects(io: CommandIO, objects: readonly unknown[], format: 'yaml' | 'json', header = ''): void {
  if (format === 'json') {
    for (const o of objects) io.stdout.write(JSON.stringify(o) + '\n');
    return;
  }
  // lineWidth 0: never fold long strings (CEL expressions, base64), so diffs stay line-for-line.
  io.stdout.write(header + objects.map((o) => '---\n' + stringify(o, { lineWidth: 0 })).join(''));
}

/** The -o flag every manifest-printing command takes. */
export const OUTPUT_FLAG = { name: 'output', short: 'o', type: 'string', choices: ['yaml', 'json'], default: 'yaml', help: 'yaml: one YAML stream; json: one JSON object per line', env: false } as const;
