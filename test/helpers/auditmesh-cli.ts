// Runs the auditmesh CLI from source (under tsx), as bin/auditmesh.js runs it from build/.
import { main } from '../../control/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`auditmesh: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
