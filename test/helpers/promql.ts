import { parser } from '@prometheus-io/lezer-promql';

/** Grafana's interval variables are not PromQL durations; every other `$var` sits inside a string. */
const GRAFANA_INTERVALS = /\$__(rate_interval|interval|range)\b/g;

/**
 * Parses one PromQL expression with Prometheus's own (lezer) grammar, as its UI does. Returns the
 * syntax errors (with their offset) and the metric names the expression selects.
 */
export function parsePromQL(expr: string): { errors: string[]; metricNames: Set<string> } {
  const text = expr.replace(GRAFANA_INTERVALS, '5m');
  const errors: string[] = [];
  const metricNames = new Set<string>();
  parser.parse(text).iterate({
    enter(node) {
      if (node.type.isError) errors.push(`syntax error at ${node.from}: …${text.slice(Math.max(0, node.from - 20), node.from + 20)}…`);
      if (node.name === 'Identifier' && node.node.parent?.name === 'VectorSelector') metricNames.add(text.slice(node.from, node.to));
    },
  });
  return { errors, metricNames };
}

/** Every PromQL expression in a Grafana dashboard: panel targets and query variables. */
export function dashboardExpressions(dashboard: unknown): string[] {
  const d = dashboard as { panels: Array<{ targets?: Array<{ expr: string }> }>; templating: { list: Array<{ type: string; definition?: string }> } };
  const fromPanels = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  // label_values(selector, label) is Grafana's, not PromQL: its selector is.
  const fromVariables = d.templating.list.filter((v) => v.type === 'query').map((v) => /^label_values\((.*),\s*\w+\)$/.exec(v.definition ?? '')?.[1] ?? `invalid variable ${v.definition}`);
  return [...fromPanels, ...fromVariables];
}
