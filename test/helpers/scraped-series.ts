type Labels = Record<string, string>;

/** One series as Prometheus stores it: the metric's name, its own labels and the target's. */
export interface StoredSeries {
  name: string;
  labels: Labels;
}

interface ScrapeJob {
  job_name: string;
  metrics_path?: string;
  static_configs: Array<{ targets: string[]; labels?: Labels }>;
  relabel_configs?: Array<{ action?: string; regex?: string }>;
}

const unescape = (v: string): string => v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));

/** The sample lines of Prometheus text: each series' name and labels (values and comments left out). */
export function exposedSeries(text: string): StoredSeries[] {
  const series: StoredSeries[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+$/.exec(line);
    if (m === null) continue;
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = unescape(l[2]!);
    series.push({ name: m[1]!, labels });
  }
  return series;
}

/**
 * The labels Prometheus gives a static target: the group's labels, `job` unless the group sets it,
 * the job's relabelings (labeldrop and labelkeep, all the rendered monitors use), then `instance`.
 */
function targetLabels(job: ScrapeJob, address: string, group: Labels): Labels {
  let labels: Labels = { job: job.job_name, ...group };
  for (const r of job.relabel_configs ?? []) {
    const re = new RegExp(`^(?:${r.regex ?? '(.*)'})$`);
    if (r.action === 'labeldrop') labels = Object.fromEntries(Object.entries(labels).filter(([k]) => !re.test(k)));
    else if (r.action === 'labelkeep') labels = Object.fromEntries(Object.entries(labels).filter(([k]) => re.test(k)));
    else throw new Error(`relabel action ${r.action} is not modelled here; add it`);
  }
  return { instance: address, ...labels };
}

/** A target label displaces the metric's own label of that name to exported_NAME (honor_labels: false). */
function attach(series: StoredSeries, target: Labels): StoredSeries {
  const labels: Labels = {};
  for (const [k, v] of Object.entries(series.labels)) labels[k in target ? `exported_${k}` : k] = v;
  return { name: series.name, labels: { ...labels, ...target } };
}

/** Scrapes every static target of `config` (prometheus.yml as an object) and returns the series as Prometheus would store them. */
export async function scrapeAsPrometheus(config: { scrape_configs?: unknown }): Promise<StoredSeries[]> {
  const jobs = (config.scrape_configs ?? []) as ScrapeJob[];
  const all: StoredSeries[] = [];
  for (const job of jobs) {
    for (const group of job.static_configs) {
      for (const address of group.targets) {
        const text = await (await fetch(`http://${address}${job.metrics_path ?? '/metrics'}`)).text();
        const target = targetLabels(job, address, group.labels ?? {});
        all.push(...exposedSeries(text).map((s) => attach(s, target)));
      }
    }
  }
  return all;
}

/** A series in PromQL's notation, as promtool's input_series take it. */
export function seriesSelector(s: StoredSeries): string {
  return `${s.name}{${Object.entries(s.labels)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(', ')}}`;
}
