import { ConfigError } from './errors.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** HOST:PORT, [IPv6]:PORT, or :PORT for every address; `what` names the flag in the error. */
export function parseListenAddress(text: string, what: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) {
    throw new ConfigError(`${what} must be HOST:PORT, [IPv6]:PORT or :PORT, not "${text}"`);
  }
  return { host: m[1] ?? (m[2] || '::'), port };
}
