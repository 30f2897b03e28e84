/**
 * The agent's own log: one line per message on stderr, prefixed "convis:".
 * Events go to sinks, never here. Nothing logged may contain a secret.
 */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  debug(msg: string): void;
  readonly verbose: boolean;
}

export function createLogger(verbose: boolean, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return {
    verbose,
    info: (msg) => write(`convis: ${msg}\n`),
    warn: (msg) => write(`convis: warning: ${msg}\n`),
    debug: (msg) => {
      if (verbose) write(`convis: ${msg}\n`);
    },
  };
}
