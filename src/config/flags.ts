/**
 * Flags as every convis command reads them: node's parseArgs, strict, no
 * positional arguments, and its errors as one-line ConfigErrors.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from './errors.js';

export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, where = '') {
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: false, options }).values;
  } catch (e) {
    // parseArgs' messages are one sentence already; drop its hints after the first line
    throw new ConfigError(`${where}${(e as Error).message.split('\n')[0] ?? String(e)}`);
  }
}
