/**
 * The prometheus sink's options, parsed and checked at start-up. Apart from
 * the sink itself, so that checking a spec does not load protobufjs and
 * snappy: the sink module is loaded only when a prometheus sink is made.
 */
import { readFileSync, statSync } from 'node:fs';
import { parseDurationMs } from '../../config/duration.js';
import { ConfigError } from '../../config/errors.js';
import type { EnvCredentials } from '../../config/config.js';
import { readCredentialFile, secrets } from '../../config/secrets.js';

export interface PrometheusSinkOptions {
  /** the remote write URL, e.g. http://prometheus:9090/api/v1/write */
  endpoint: URL;
  /** HTTP basic auth; both or neither */
  username?: string;
  password?: string;
  /** a file holding a bearer token, read (and trimmed) at each request, so rotation needs no restart */
  bearerTokenFile?: string;
  /** extra request headers, e.g. a tenant id (X-Scope-OrgID) */
  headers: Record<string, string>;
  /** how often a snapshot is taken and sent */
  intervalMs: number;
  /** series per request (default 2000) */
  maxSeriesPerRequest?: number;
  /** requests held waiting (one waiting to be retried among them), besides the one being sent, while the endpoint is slow or down (default 100); the latest snapshot is always kept whole */
  maxQueue?: number;
}

export const DEFAULT_INTERVAL_MS = 10_000;
export const DEFAULT_MAX_QUEUE = 100;
const MAX_INTERVAL_MS = 3_600_000;

const KEYS = ['endpoint', 'username', 'password', 'password_file', 'bearer_token_file', 'interval'];
const HEADER_PREFIX = 'header.';
const HEADER_FILE_PREFIX = 'header_file.';
/** headers the protocol needs as convis sets them */
const RESERVED_HEADERS = [
  'content-encoding',
  'content-type',
  'content-length',
  'x-prometheus-remote-write-version',
  'host',
  'transfer-encoding',
  'connection',
];
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** what Node accepts in a header value: no control characters but tab */
export const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function configError(message: string): never {
  throw new ConfigError(`--sink prometheus: ${message}`);
}

/** "10s", "500ms", "1m", "1h", or plain seconds ("15"); fractions allowed. */
export function parseInterval(text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined) {
    configError(`interval must be a duration such as 10s, 500ms, 1m or 15 (seconds), not ${JSON.stringify(text)}`);
  }
  if (ms <= 0 || ms > MAX_INTERVAL_MS) configError(`interval must be more than 0 and at most 1h, not ${JSON.stringify(text)}`);
  return ms;
}

/**
 * The sink spec: prometheus,endpoint=URL[,username=U,password=P]
 * [,bearer_token_file=F][,interval=10s][,header.NAME=VALUE]...
 * Errors are ConfigError, one line, and never quote a password, token or
 * header value (a header may carry a tenant's token).
 */
export function parsePrometheusOptions(o: Record<string, string>, env: EnvCredentials = {}): PrometheusSinkOptions {
  const headers: Record<string, string> = {};
  const headerNames = new Set<string>();
  const readText = (path: string) => readFileSync(path, 'utf8');
  for (const key of Object.keys(o)) {
    const fromFile = key.startsWith(HEADER_FILE_PREFIX);
    if (key.startsWith(HEADER_PREFIX) || fromFile) {
      const name = key.slice(fromFile ? HEADER_FILE_PREFIX.length : HEADER_PREFIX.length);
      if (name === '') configError(`${fromFile ? HEADER_FILE_PREFIX : HEADER_PREFIX} needs a header name, as in header.X-Scope-OrgID=tenant`);
      if (!TOKEN.test(name)) configError(`${JSON.stringify(key)}: a header name is letters, digits and -_.!#$%&'*+^\`|~ only`);
      const lower = name.toLowerCase();
      if (RESERVED_HEADERS.includes(lower)) configError(`header ${name} is set by convis and cannot be given`);
      if (headerNames.has(lower)) configError(`header ${name} is given twice`);
      headerNames.add(lower);
      // a header_file.<name> holds the value, read once at start
      const value = fromFile ? readCredentialFile(key, o[key] as string, configError, readText).trim() : (o[key] as string);
      if (value === '') configError(`header ${name} has an empty value`);
      if (BAD_HEADER_VALUE.test(value)) configError(`header ${name} has a value with a character not allowed in HTTP headers`);
      headers[name] = value;
    } else if (!KEYS.includes(key)) {
      configError(`unknown option ${JSON.stringify(key)} (known: ${KEYS.join(', ')}, ${HEADER_PREFIX}<name>, ${HEADER_FILE_PREFIX}<name>)`);
    }
  }

  const text = o.endpoint;
  if (text === undefined || text.trim() === '') configError('needs endpoint=URL, e.g. endpoint=http://prometheus:9090/api/v1/write');
  let endpoint: URL;
  try {
    endpoint = new URL(text.trim());
  } catch {
    // not quoted: a mistyped URL may still hold credentials
    configError('endpoint is not a valid URL (expected e.g. http://prometheus:9090/api/v1/write)');
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    configError(`endpoint must be an http:// or https:// URL, not ${endpoint.protocol}//`);
  }
  if (endpoint.username !== '' || endpoint.password !== '') {
    configError('endpoint must not hold credentials; give username= and password= instead');
  }
  endpoint.hash = '';

  const { username } = o;
  if (o.password !== undefined && o.password_file !== undefined) configError('password and password_file exclude each other: give one');
  // on the command line, else in a file, else in the environment (for a sink with a username)
  let password = o.password;
  if (o.password_file !== undefined) password = readCredentialFile('password_file', o.password_file, configError, readText);
  else if (password === undefined && username !== undefined && env.prometheusPassword !== undefined) password = env.prometheusPassword;
  const bearerTokenFile = o.bearer_token_file;
  if ((username === undefined) !== (password === undefined)) {
    configError('username and password go together: give both or neither (the password as password=, password_file= or $CONVIS_PROMETHEUS_PASSWORD)');
  }
  if (bearerTokenFile !== undefined && username !== undefined) {
    configError('bearer_token_file and username/password exclude each other: use one way to authenticate');
  }
  if (username === '') configError('username is empty');
  if (username?.includes(':')) configError('username must not contain ":" (basic auth cannot carry it)');
  const hasAuthHeader = headerNames.has('authorization');
  if (hasAuthHeader && (username !== undefined || bearerTokenFile !== undefined)) {
    configError('header Authorization and username/password or bearer_token_file exclude each other');
  }
  if (bearerTokenFile !== undefined) {
    if (bearerTokenFile === '') configError('bearer_token_file is empty');
    try {
      if (!statSync(bearerTokenFile).isFile()) configError(`bearer_token_file ${JSON.stringify(bearerTokenFile)} is not a file`);
      // readable now; it is read again at each request, so it may be rotated
      secrets.add(readFileSync(bearerTokenFile, 'utf8').trim());
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      configError(`bearer_token_file ${JSON.stringify(bearerTokenFile)} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }

  const options: PrometheusSinkOptions = {
    endpoint,
    headers,
    intervalMs: o.interval === undefined ? DEFAULT_INTERVAL_MS : parseInterval(o.interval),
  };
  if (username !== undefined) {
    options.username = username;
    options.password = password;
  }
  if (bearerTokenFile !== undefined) options.bearerTokenFile = bearerTokenFile;
  return options;
}

