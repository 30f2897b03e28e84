/**
 * The sink registry: which --sink types exist, which keys each takes,
 * validation at start-up, and construction. A sink type is listed here
 * only when it is implemented.
 */
import { ConfigError } from '../config/errors.js';
import type { SinkSpec } from '../config/sink-spec.js';
import type { Sink } from './sink.js';
import { StdoutSink, type StdoutFormat } from './stdout.js';

export interface SinkContext {
  /** called when a sink's output is gone for good (e.g. stdout closed by its reader) */
  onClosed: (sink: string, err: Error) => void;
}

interface SinkType {
  /** key -> description, for errors and --help */
  keys: Record<string, string>;
  validate(options: Record<string, string>): void;
  create(options: Record<string, string>, ctx: SinkContext): Sink;
}

const FORMATS = ['text', 'json'];

const TYPES: Record<string, SinkType> = {
  stdout: {
    keys: { format: 'text (default) or json' },
    validate(o) {
      if (o.format !== undefined && !FORMATS.includes(o.format)) {
        throw new ConfigError(`--sink stdout: format must be text or json, not "${o.format}"`);
      }
    },
    create(o, ctx) {
      return new StdoutSink({ format: (o.format ?? 'text') as StdoutFormat, onClosed: (err) => ctx.onClosed('stdout', err) });
    },
  },
};

export const sinkTypes = (): string[] => Object.keys(TYPES);

/** Checks type and keys of every spec; throws ConfigError with one sentence. */
export function validateSinkSpecs(specs: readonly SinkSpec[]): void {
  for (const spec of specs) {
    const t = TYPES[spec.type];
    if (!t) throw new ConfigError(`unknown sink type "${spec.type}" (available: ${sinkTypes().join(', ')})`);
    for (const key of Object.keys(spec.options)) {
      if (!(key in t.keys)) {
        throw new ConfigError(`--sink ${spec.type}: unknown option "${key}" (known: ${Object.keys(t.keys).join(', ')})`);
      }
    }
    t.validate(spec.options);
  }
}

export function createSinks(specs: readonly SinkSpec[], ctx: SinkContext): Sink[] {
  validateSinkSpecs(specs);
  return specs.map((s) => (TYPES[s.type] as SinkType).create(s.options, ctx));
}

/** "--sink" help text: each type and its keys. */
export function sinkHelp(): string {
  return Object.entries(TYPES)
    .map(([name, t]) => `  ${name}${Object.entries(t.keys).map(([k, d]) => `\n      ${k}=  ${d}`).join('')}`)
    .join('\n');
}
