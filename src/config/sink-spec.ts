/**
 * The --sink syntax kept from the original convis: TYPE[,key=value]...
 * A comma inside a value is written "\,". This only parses the syntax;
 * which types and keys exist is the sinks' business (src/sinks/index.ts).
 */
import { ConfigError } from './errors.js';

export interface SinkSpec {
  type: string;
  options: Record<string, string>;
}

function splitUnescaped(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && text[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (c === ',') {
      parts.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  return parts;
}

/** Parses one --sink argument. Error messages name keys, never values (they may be secrets). */
export function parseSinkSpec(spec: string): SinkSpec {
  const [type = '', ...pairs] = splitUnescaped(spec);
  const t = type.trim();
  if (t === '') throw new ConfigError('--sink needs a type first, as in --sink stdout or --sink stdout,format=json');
  if (!/^[a-z][a-z0-9_-]*$/.test(t)) throw new ConfigError(`--sink type must be a lower-case word, not "${t}"`);
  const options: Record<string, string> = Object.create(null);
  pairs.forEach((pair, i) => {
    const eq = pair.indexOf('=');
    const key = (eq < 0 ? pair : pair.slice(0, eq)).trim();
    if (eq < 0 || key === '') {
      throw new ConfigError(`--sink ${t}: argument ${i + 1} must be key=value`);
    }
    if (key in options) throw new ConfigError(`--sink ${t}: ${key} is given twice`);
    options[key] = pair.slice(eq + 1);
  });
  return { type: t, options };
}
