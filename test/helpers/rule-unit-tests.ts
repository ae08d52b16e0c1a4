import { seriesSelector, type StoredSeries } from './scraped-series.js';

/*
 * promtool's rule unit tests (`promtool test rules`), generated from a table of cases over the
 * series a real scrape stored: the metric names and label sets are the components' own, so a rule
 * selecting a name or label they do not expose stays silent and its test fails.
 */

type Labels = Record<string, string>;

/** An input series: the one series named `name` that pod `pod` exposes with `match` among its labels, and its values in an incident and in normal traffic. */
export interface Input {
  pod: string;
  name: string;
  match?: Labels;
  /** promtool's notation, one sample a minute from 0m: `0x9 1x50` is 0 until 9m, then 1. */
  incident: string;
  normal: string;
}

export interface AlertCase {
  series: Input[];
  /** The minute of the first evaluation at which the alert fires in the incident; a minute earlier it does not. */
  firesAt: number;
  severity: string;
  /** The labels the alert carries besides severity, by name; their values are the first input series'. */
  labels: string[];
  /** What `{{ $value }}` prints at `firesAt`, through the description's humanize function if any. */
  value?: string;
}

export interface RenderedRule {
  alert: string;
  annotations: Labels;
}

function pick(stored: readonly StoredSeries[], input: Input): StoredSeries {
  const found = stored.filter((s) => s.name === input.name && s.labels.pod === input.pod && Object.entries(input.match ?? {}).every(([k, v]) => s.labels[k] === v));
  if (found.length === 1) return found[0]!;
  throw new Error(`${input.pod} exposes ${found.length} series ${input.name}${JSON.stringify(input.match ?? {})}, not one: ${found.map(seriesSelector).join('; ') || 'a renamed metric or label?'}`);
}

/**
 * An annotation as Prometheus renders it for an alert with `labels` and `value`: `{{ $labels.X }}`
 * and `{{ $value }}` (optionally through humanizePercentage or humanizeDuration). A label the alert
 * does not carry, or any other template construct, throws: the runbook text must not print `<no value>`.
 */
export function renderAnnotation(template: string, labels: Labels, value: string | undefined): string {
  const text = template
    .replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => {
      if (labels[name] === undefined) throw new Error(`the annotation names $labels.${name}, which the alert does not carry: ${template}`);
      return labels[name];
    })
    .replace(/\{\{ \$value(?: \| humanize(?:Percentage|Duration))? \}\}/g, () => {
      if (value === undefined) throw new Error(`the annotation prints $value; give the case a value: ${template}`);
      return value;
    });
  if (text.includes('{{')) throw new Error(`a template construct this test does not render: ${template}`);
  return text;
}

const alertTest = (alertname: string, minute: number, expAlerts: unknown[]): Record<string, unknown> => ({ eval_time: `${minute}m`, alertname, exp_alerts: expAlerts });
const inputSeries = (stored: readonly StoredSeries[], inputs: readonly Input[], values: (i: Input) => string): Array<{ series: string; values: string }> =>
  inputs.map((input) => ({ series: seriesSelector(pick(stored, input)), values: values(input) }));

/** The alert fires exactly at `firesAt` in its incident (not a minute earlier), with its labels and annotations. */
function incidentGroup(rule: RenderedRule, c: AlertCase, stored: readonly StoredSeries[]): Record<string, unknown> {
  const first = pick(stored, c.series[0]!).labels;
  const labels: Labels = { severity: c.severity, ...Object.fromEntries(c.labels.map((name) => [name, first[name] ?? `(no ${name} on ${c.series[0]!.name})`])) };
  const annotations = Object.fromEntries(Object.entries(rule.annotations).map(([k, v]) => [k, renderAnnotation(v, labels, c.value)]));
  return {
    name: `${rule.alert} fires in its incident`,
    interval: '1m',
    input_series: inputSeries(stored, c.series, (i) => i.incident),
    alert_rule_test: [alertTest(rule.alert, c.firesAt - 1, []), alertTest(rule.alert, c.firesAt, [{ exp_labels: labels, exp_annotations: annotations }])],
  };
}

/** Every case's normal traffic at once, as one mesh would show it: no alert fires, at its firing time or ten minutes later. */
function normalGroup(rules: readonly RenderedRule[], cases: Readonly<Record<string, AlertCase>>, stored: readonly StoredSeries[]): Record<string, unknown> {
  const series = new Map<string, string>();
  for (const { series: s, values } of Object.values(cases).flatMap((c) => inputSeries(stored, c.series, (i) => i.normal))) {
    if ((series.get(s) ?? values) !== values) throw new Error(`two cases give ${s} different normal values`);
    series.set(s, values);
  }
  return {
    name: 'normal traffic fires nothing',
    interval: '1m',
    input_series: [...series].map(([s, values]) => ({ series: s, values })),
    alert_rule_test: rules.flatMap((r) => [alertTest(r.alert, cases[r.alert]!.firesAt, []), alertTest(r.alert, cases[r.alert]!.firesAt + 10, [])]),
  };
}

/** promtool's test file for `rulesFile` (a path relative to the test file): every case, over series picked from `stored`. */
export function ruleUnitTests(rulesFile: string, rules: readonly RenderedRule[], cases: Readonly<Record<string, AlertCase>>, stored: readonly StoredSeries[]): Record<string, unknown> {
  const missing = rules.filter((r) => cases[r.alert] === undefined).map((r) => r.alert);
  if (missing.length > 0) throw new Error(`no unit test case for ${missing.join(', ')}`);
  return {
    rule_files: [rulesFile],
    evaluation_interval: '1m',
    tests: [...rules.map((rule) => incidentGroup(rule, cases[rule.alert]!, stored)), normalGroup(rules, cases, stored)],
  };
}
