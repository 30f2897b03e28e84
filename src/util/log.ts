/**
 * The agent's own log: one line per message on stderr, prefixed "convis:".
 * Events go to sinks, never here. Nothing logged may contain a secret: every
 * line is scrubbed of the credentials convis was given, whatever quoted them.
 */
import { secrets } from '../config/secrets.js';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  debug(msg: string): void;
  readonly verbose: boolean;
}

export function createLogger(verbose: boolean, out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const write = (line: string) => out(secrets.scrub(line));
  return {
    verbose,
    info: (msg) => write(`convis: ${msg}\n`),
    warn: (msg) => write(`convis: warning: ${msg}\n`),
    debug: (msg) => {
      if (verbose) write(`convis: ${msg}\n`);
    },
  };
}
