// Child entry: the auditmesh CLI from the report's compiled tree (bench/results/build), as the
// image runs bin/auditmesh.js from build/: `npm run soak` starts the sidecar through it.
import { main } from '../control/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
