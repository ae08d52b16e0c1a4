import { parseArgs } from 'node:util';

/** A usage error: the command line or environment is wrong. The CLI prints it and exits 2. */
export class UsageError extends Error {
  readonly code = 'AUDITMESH_USAGE';
}

/** One flag of a command, also settable as an environment variable. */
export interface FlagSpec {
  name: string;
  type: 'string' | 'int' | 'number' | 'boolean' | 'list';
  /** Default, as the string a user would type. */
  default?: string;
  help: string;
  /** Allowed values for a string flag. */
  choices?: readonly string[];
  /** Environment variable; defaults to AUDITMESH_<NAME_IN_UPPER_SNAKE>. */
  env?: string | false;
  short?: string;
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

export function envName(spec: FlagSpec): string | undefined {
  if (spec.env === false) return undefined;
  return spec.env ?? 'AUDITMESH_' + spec.name.toUpperCase().replace(/-/g, '_');
}

/**
 * Parses argv against a flag table; each flag falls back to its environment variable, then its
 * default. Errors name the flag or variable at fault. Returns the values and positionals.
 */
export function parseFlags(
  specs: readonly FlagSpec[],
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): { values: FlagValues; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(
        specs.map((s) => [s.name, { type: s.type === 'boolean' ? 'boolean' : 'string', ...(s.short ? { short: s.short } : {}) }]),
      ) as Record<string, { type: 'string' | 'boolean'; short?: string }>,
    });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify.*$/s, ''));
  }
  const values: FlagValues = {};
  for (const spec of specs) {
    const fromArgv = parsed.values[spec.name];
    const variable = envName(spec);
    const fromEnv = variable !== undefined ? env[variable] : undefined;
    const source = fromArgv !== undefined ? `--${spec.name}` : fromEnv !== undefined ? variable! : `default of --${spec.name}`;
    const raw = fromArgv ?? fromEnv ?? spec.default;
    values[spec.name] = raw === undefined ? undefined : convert(spec, raw, source);
  }
  return { values, positionals: parsed.positionals };
}

function convert(spec: FlagSpec, raw: string | boolean, source: string): string | number | boolean | string[] {
  if (spec.type === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off|)$/i.test(raw)) return false;
    throw new UsageError(`${source}: expected true or false, got ${JSON.stringify(raw)}`);
  }
  const text = String(raw);
  if (spec.type === 'int') {
    if (!/^\d+$/.test(text)) throw new UsageError(`${source}: expected a whole number, got ${JSON.stringify(text)}`);
    return Number(text);
  }
  if (spec.type === 'number') {
    if (!/^\d+(\.\d+)?$/.test(text)) throw new UsageError(`${source}: expected a number, got ${JSON.stringify(text)}`);
    return Number(text);
  }
  if (spec.type === 'list') return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (spec.choices !== undefined && !spec.choices.includes(text)) {
    throw new UsageError(`${source}: expected one of ${spec.choices.join(', ')}, got ${JSON.stringify(text)}`);
  }
  return text;
}

/** `--help` text for a command: usage line, then one line per flag with its env var and default. */
export function formatHelp(usage: string, summary: string, specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const arg = s.type === 'boolean' ? '' : s.choices ? ` ${s.choices.join('|')}` : s.type === 'int' || s.type === 'number' ? ' N' : ' VALUE';
    const left = `  --${s.name}${arg}`;
    const extra = [envName(s) ? `env ${envName(s)}` : '', s.default !== undefined ? `default ${s.default}` : '']
      .filter(Boolean)
      .join(', ');
    return `${left.padEnd(36)} ${s.help}${extra ? ` (${extra})` : ''}`;
  });
  return `Usage: ${usage}\n\n${summary}\n\nFlags:\n${rows.join('\n')}\n`;
}

/** A port flag's value, checked. */
export function port(values: FlagValues, name: string): number {
  const n = values[name] as number;
  if (n > 65535) throw new UsageError(`--${name}: ${n} is not a TCP port (0-65535)`);
  return n;
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration flag (`90s`, `30m`, `12h`, `7d`, `0`), in milliseconds. */
export function durationMs(values: FlagValues, name: string): number {
  const text = String(values[name]);
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text);
  if (m === null || (m[2] === undefined && m[1] !== '0')) throw new UsageError(`--${name}: expected a duration such as 90s, 30m, 12h or 7d (or 0), got ${JSON.stringify(text)}`);
  return Number(m[1]) * DURATION_UNITS_MS[m[2] ?? 'ms'];
}
