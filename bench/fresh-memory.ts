// What writing to memory the process has not touched yet costs on this machine, against writing
// the same bytes to memory it reuses, measured in the same run.
//
//   npm run bench:memory      knobs: COPIES=300 (per size and way), SIZES=190000,1500000 (bytes)
//
// The sizes are a collector batch value (256 records of ~740 bytes) and a segment message as
// grpc-js gathers it (2,048 records). "fresh" allocates a new Buffer for every copy and drops
// it, as Buffer.concat and a worker's batch encoder do; "reused" copies into one Buffer kept for
// the run. On the reference VM (2026-11-28) a page fault cost about 15 µs, and fresh copies were
// 20-165x slower than reused ones: see bench/README.md, "Fresh memory on this VM".
import { availableParallelism } from 'node:os';
import { formatTable } from './table.js';

const COPIES = Number(process.env.COPIES ?? 300);
const SIZES = (process.env.SIZES ?? '190000,1500000').split(',').map(Number);
if (!Number.isInteger(COPIES) || COPIES < 1) throw new Error(`COPIES: a whole number of copies, at least 1, not ${process.env.COPIES}`);
const badSize = SIZES.find((s) => !Number.isInteger(s) || s < 1);
if (badSize !== undefined) throw new Error(`SIZES: whole numbers of bytes, comma-separated, not ${process.env.SIZES}`);

interface Timed {
  usPerCopy: number;
  faultsPerCopy: number;
}

/** Runs `copy` COPIES times; µs and minor page faults per copy. */
function timed(copy: () => void): Timed {
  const faults0 = process.resourceUsage().minorPageFault;
  const started = performance.now();
  for (let i = 0; i < COPIES; i++) copy();
  const us = (performance.now() - started) * 1000;
  return { usPerCopy: us / COPIES, faultsPerCopy: (process.resourceUsage().minorPageFault - faults0) / COPIES };
}

const rows: string[][] = [];
const findings: string[] = [];
for (const size of SIZES) {
  const src = Buffer.alloc(size, 0x5a);
  const kept = Buffer.alloc(size);
  // Once each way first, so neither pays for the first call's compilation.
  src.copy(kept);
  src.copy(Buffer.allocUnsafe(size));
  const reused = timed(() => void src.copy(kept));
  const fresh = timed(() => void src.copy(Buffer.allocUnsafe(size)));
  const ratio = fresh.usPerCopy / reused.usPerCopy;
  const extraFaults = fresh.faultsPerCopy - reused.faultsPerCopy;
  const perFault = extraFaults >= 1 ? (fresh.usPerCopy - reused.usPerCopy) / extraFaults : null;
  rows.push([
    size.toLocaleString('en-US'),
    reused.usPerCopy.toFixed(1),
    fresh.usPerCopy.toFixed(1),
    `${ratio.toFixed(1)}x`,
    fresh.faultsPerCopy.toFixed(1),
    perFault === null ? 'n/a' : perFault.toFixed(1),
  ]);
  findings.push(`${size.toLocaleString('en-US')} bytes: fresh memory ${ratio.toFixed(1)}x the cost of reused, ${perFault === null ? 'no page faults to price' : `about ${perFault.toFixed(1)} µs a page fault`}`);
}

process.stdout.write(`${formatTable(['bytes a copy', 'reused µs', 'fresh µs', 'fresh / reused', 'faults a fresh copy', 'µs a fault'], rows)}\n`);
process.stdout.write(`${findings.join('\n')}\n`);
process.stdout.write(`${COPIES} copies per size and way; ${availableParallelism()} CPUs; node ${process.version}\n`);
