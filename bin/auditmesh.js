#!/usr/bin/env node
// The built CLI lives in build/ (compiled by `npm ci` through the prepare script).
import { main } from '../build/control/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`auditmesh: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
