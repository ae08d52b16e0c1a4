/** How many series (sample lines) each sample name has in Prometheus text, e.g. `x_bucket` → 42. */
export function seriesCounts(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
    if (name !== undefined) counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

const SUFFIXES: Record<string, readonly string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count', ''] };

/**
 * Every name a query can use against this exposition: each `# TYPE` family (a labelled counter
 * not yet incremented has no sample line, but is declared), histograms and summaries with their
 * sample suffixes.
 */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, family, type] = m as unknown as [string, string, string];
    for (const suffix of SUFFIXES[type] ?? ['']) names.add(family + suffix);
  }
  return names;
}
