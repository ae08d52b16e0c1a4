import { durationMs, parseFlags, port, UsageError, type FlagSpec, type FlagValues } from './flags.js';

/**
 * Settings declared once: a command's table names each setting's flag (and so its env variable
 * and its `--help` line), its default and how its value is read and checked. The command's
 * config type, its flag list and its defaults all come from the table.
 */

type Env = Readonly<Record<string, string | undefined>>;

/** One setting: its flag (none for a fixed value), and how the parsed flags become its value. */
export interface Setting<T> {
  readonly flag?: FlagSpec;
  read(values: FlagValues, env: Env): T;
}

/** A table: settings, and groups of settings that make a nested object of the config. */
export interface SettingTable {
  readonly [key: string]: Setting<unknown> | SettingTable;
}

/** The config a table describes. */
export type SettingsOf<T extends SettingTable> = { -readonly [K in keyof T]: T[K] extends Setting<infer V> ? V : T[K] extends SettingTable ? SettingsOf<T[K]> : never };

const isSetting = (entry: Setting<unknown> | SettingTable): entry is Setting<unknown> => typeof entry.read === 'function';

/** The table's flags, in the order it declares them: what the parser reads and `--help` lists. */
export function flagsOf(table: SettingTable): FlagSpec[] {
  return Object.values(table).flatMap((entry) => (isSetting(entry) ? (entry.flag === undefined ? [] : [entry.flag]) : flagsOf(entry)));
}

/** Each setting's value from parsed flags; throws UsageError naming the flag at fault. */
export function readSettings<T extends SettingTable>(table: T, values: FlagValues, env: Env): SettingsOf<T> {
  const out: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(table)) out[key] = isSetting(entry) ? entry.read(values, env) : readSettings(entry, values, env);
  return out as SettingsOf<T>;
}

/** The table's defaults: what an empty command line and environment give. */
export function defaultsOf<T extends SettingTable>(table: T): SettingsOf<T> {
  return readSettings(table, parseFlags(flagsOf(table), [], {}).values, {});
}

type Spec = Omit<FlagSpec, 'type' | 'default'>;

/** At least `min`, or a UsageError naming the flag (`message` overrides the wording). */
function atLeast(name: string, n: number, min: number | undefined, message = `at least ${min}`): number {
  if (min !== undefined && n < min) throw new UsageError(`--${name}: ${message}`);
  return n;
}

/** A string setting with a default; `check` sees its value. */
export const text = (spec: Spec & { default: string }, check: (value: string) => void = () => {}): Setting<string> => ({
  flag: { ...spec, type: 'string' },
  read: (v) => {
    const value = v[spec.name] as string;
    check(value);
    return value;
  },
});

/** A string setting without a default; `check` sees a given value. */
export const optionalText = (spec: Spec, check: (value: string) => void = () => {}): Setting<string | undefined> => ({
  flag: { ...spec, type: 'string' },
  read: (v) => {
    const value = v[spec.name] as string | undefined;
    if (value !== undefined) check(value);
    return value;
  },
});

/** One of `choices`. */
export const choice = <C extends string>(spec: Spec & { choices: readonly C[]; default: C }): Setting<C> => ({ flag: { ...spec, type: 'string' }, read: (v) => v[spec.name] as C });

/** A whole number, at least `min` when given. */
export const whole = (spec: Spec & { default: number }, min?: number, message?: string): Setting<number> => ({
  flag: { ...spec, type: 'int', default: String(spec.default) },
  read: (v) => atLeast(spec.name, v[spec.name] as number, min, message),
});

/** A whole number without a default, at least `min` when given. */
export const optionalWhole = (spec: Spec, min?: number, message?: string): Setting<number | undefined> => ({
  flag: { ...spec, type: 'int' },
  read: (v) => (v[spec.name] === undefined ? undefined : atLeast(spec.name, v[spec.name] as number, min, message)),
});

/** A number, fractions allowed. */
export const decimal = (spec: Spec & { default: number }): Setting<number> => ({ flag: { ...spec, type: 'number', default: String(spec.default) }, read: (v) => v[spec.name] as number });

/** A TCP port (0: any free one). */
export const tcpPort = (spec: Spec & { default: number }): Setting<number> => ({ flag: { ...spec, type: 'int', default: String(spec.default) }, read: (v) => port(v, spec.name) });

/** A TCP port without a default. */
export const optionalPort = (spec: Spec): Setting<number | undefined> => ({ flag: { ...spec, type: 'int' }, read: (v) => (v[spec.name] === undefined ? undefined : port(v, spec.name)) });

/** A comma-separated list. */
export const list = ({ default: given, ...spec }: Spec & { default: readonly string[] }): Setting<string[]> => ({ flag: { ...spec, type: 'list', default: given.join(',') }, read: (v) => v[spec.name] as string[] });

/** A comma-separated list without a default, read by `parse` (given [] when absent). */
export const parsedList = <T>({ default: given, ...spec }: Spec & { default?: readonly string[] }, parse: (items: string[]) => T): Setting<T> => ({
  flag: { ...spec, type: 'list', ...(given === undefined ? {} : { default: given.join(',') }) },
  read: (v) => parse((v[spec.name] as string[] | undefined) ?? []),
});

/** A duration (`90s`, `30m`, `12h`, `7d`, `0`), in milliseconds. */
export const duration = (spec: Spec & { default: string }): Setting<number> => ({ flag: { ...spec, type: 'string' }, read: (v) => durationMs(v, spec.name) });

/** A boolean flag (present, or `true`/`false` in its variable). */
export const flag = ({ default: off, ...spec }: Spec & { default?: false }): Setting<boolean> => ({ flag: { ...spec, type: 'boolean', ...(off === false ? { default: 'false' } : {}) }, read: (v) => v[spec.name] === true });

/** A value no flag sets. */
export const fixed = <T>(value: T): Setting<T> => ({ read: () => value });

/** A value computed from the parsed flags and the environment (a flag with a fallback, say); `spec` declares its flag, if any. */
export const derived = <T>(spec: FlagSpec | undefined, read: (values: FlagValues, env: Env) => T): Setting<T> => ({ ...(spec === undefined ? {} : { flag: spec }), read });
