/**
 * Policy rules (`--policy FILE`, YAML): which workloads may talk to what.
 *
 *   rules:
 *     - name: web-egress
 *       select: { image: "*nginx*" }
 *       allow:
 *         - { cidr: 10.0.0.0/8 }
 *         - { cidr: 0.0.0.0/0, ports: [443, "8000-8099"], direction: outbound }
 *
 * A rule selects workloads by any of process (comm), container (name),
 * image, namespace and pod, each a glob (`*` and `?` match any characters,
 * `/` included; `[...]` a class), all given keys having to match; an empty
 * or absent `select` selects everything. A connection of a selected
 * workload is permitted when an `allow` entry of any rule that selects it
 * matches its remote address (`cidr`, IPv4 or IPv6), the name that address
 * was resolved from (`domain`, a glob; known from the DNS answers the node
 * received), its service port
 * (`ports`: the remote port of an outbound connection, the local one of an
 * inbound one; numbers or "low-high" ranges; any when absent) and its
 * direction (`outbound` or `inbound`; both when absent). Anything else is a
 * violation of the first rule (in file order) that selects it.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { servicePort } from '../metadata/event.js';
import ipaddr from 'ipaddr.js';
import picomatch from 'picomatch';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { ConnectionEvent } from '../metadata/event.js';

/** A policy file that cannot be used: one line naming the file, the line and the problem. */
export class PolicyError extends Error {}

const SELECT_KEYS = ['process', 'container', 'image', 'namespace', 'pod'] as const;
type SelectKey = (typeof SELECT_KEYS)[number];
const RULE_KEYS = ['name', 'select', 'allow'];
const ALLOW_KEYS = ['cidr', 'ports', 'direction', 'domain'];

type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

interface Allow {
  /** undefined: any address (a domain entry) */
  cidr?: Cidr;
  /** the remote's DNS name must match (known from the answers the node received) */
  domain?: (name: string) => boolean;
  /** inclusive ranges; undefined: any port */
  ports?: [number, number][];
  direction?: 'outbound' | 'inbound';
}

export interface Rule {
  name: string;
  select: Partial<Record<SelectKey, (s: string) => boolean>>;
  allow: Allow[];
}

/** What a policy looks at of an event's workload. */
function workloadValue(e: ConnectionEvent, key: SelectKey): string | undefined {
  switch (key) {
    case 'process':
      return e.process?.comm;
    case 'container':
      return e.container?.name ?? undefined;
    case 'image':
      return e.container?.image ?? undefined;
    case 'namespace':
      return e.pod?.namespace ?? undefined;
    case 'pod':
      return e.pod?.name ?? undefined;
  }
}

/** The port of the service side, as the flow counters' server_port (defined with the event). */
export { servicePort };

function parseAddress(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (isIP(ip) === 0) return undefined;
  const a = ipaddr.parse(ip);
  return a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress() ? (a as ipaddr.IPv6).toIPv4Address() : a;
}

export class Policy {
  private constructor(
    readonly file: string,
    readonly rules: readonly Rule[],
  ) {}

  /** Reads and checks a policy file; throws PolicyError. */
  static load(file: string): Policy {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new PolicyError(`policy ${file}: cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return Policy.parse(text, file);
  }

  /** Checks a policy's text; throws PolicyError naming `file` and the line. */
  static parse(text: string, file: string): Policy {
    const lc = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
    const fail = (offset: number | undefined, problem: string): never => {
      const line = offset === undefined ? 1 : lc.linePos(offset).line;
      throw new PolicyError(`policy ${file}:${line}: ${problem}`);
    };
    const first = doc.errors[0];
    if (first) fail(first.pos[0], first.message.split('\n')[0] ?? 'not YAML');
    return new Policy(file, compile(doc, fail));
  }

  /**
   * The rule an event violates, or undefined when it is permitted or no rule
   * selects its workload.
   */
  violated(e: ConnectionEvent): Rule | undefined {
    let selected: Rule | undefined;
    const remote = e.remote ? parseAddress(e.remote.ip) : undefined;
    const port = servicePort(e);
    for (const rule of this.rules) {
      if (!selects(rule, e)) continue;
      selected ??= rule;
      for (const a of rule.allow) if (permits(a, e, remote, port)) return undefined;
    }
    return selected;
  }
}

function selects(rule: Rule, e: ConnectionEvent): boolean {
  for (const key of SELECT_KEYS) {
    const m = rule.select[key];
    if (m === undefined) continue;
    const v = workloadValue(e, key);
    if (v === undefined || !m(v)) return false;
  }
  return true;
}

function permits(a: Allow, e: ConnectionEvent, remote: ipaddr.IPv4 | ipaddr.IPv6 | undefined, port: number): boolean {
  if (a.direction !== undefined && a.direction !== e.direction) return false;
  if (a.domain !== undefined) {
    const name = e.remote?.name;
    if (name === undefined || !a.domain(name)) return false;
  }
  if (a.cidr !== undefined) {
    if (remote === undefined || remote.kind() !== a.cidr[0].kind()) return false;
    if (!remote.match(a.cidr)) return false;
  }
  return a.ports === undefined || a.ports.some(([lo, hi]) => port >= lo && port <= hi);
}

type Fail = (offset: number | undefined, problem: string) => never;

/** Turns the document into rules, or fails at the line of the first problem. */
function compile(doc: Document, fail: Fail): Rule[] {
  const at = (path: (string | number)[]): number | undefined => {
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    return node?.range?.[0];
  };
  const root = doc.contents;
  if (!isMap(root)) fail(at([]), 'expected a mapping with a "rules" list');
  for (const item of root.items) {
    const k = String((item.key as { value?: unknown })?.value ?? item.key);
    if (k !== 'rules') fail((item.key as { range?: number[] })?.range?.[0], `unknown key "${k}" (expected "rules")`);
  }
  const rulesNode = doc.get('rules', true);
  if (!isSeq(rulesNode)) fail(at(['rules']) ?? at([]), '"rules" must be a list of rules');
  const names = new Set<string>();
  return rulesNode.items.map((_, i): Rule => {
    const path = ['rules', i];
    const raw = doc.getIn(path, true);
    if (!isMap(raw)) fail(at(path), `rule ${i + 1} must be a mapping with name, select and allow`);
    const r = (raw.toJSON() ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(r)) if (!RULE_KEYS.includes(k)) fail(at([...path, k]) ?? at(path), `rule ${i + 1}: unknown key "${k}" (known: ${RULE_KEYS.join(', ')})`);
    if (typeof r.name !== 'string' || r.name.trim() === '') fail(at([...path, 'name']) ?? at(path), `rule ${i + 1} needs a name`);
    const name = r.name;
    if (names.has(name)) fail(at([...path, 'name']), `rule name "${name}" is used twice`);
    names.add(name);

    const select: Rule['select'] = {};
    if (r.select !== undefined && r.select !== null) {
      if (typeof r.select !== 'object' || Array.isArray(r.select)) fail(at([...path, 'select']), `rule "${name}": select must be a mapping of ${SELECT_KEYS.join(', ')}`);
      for (const [k, v] of Object.entries(r.select as Record<string, unknown>)) {
        const where = at([...path, 'select', k]) ?? at([...path, 'select']);
        if (!(SELECT_KEYS as readonly string[]).includes(k)) fail(where, `rule "${name}": unknown select key "${k}" (known: ${SELECT_KEYS.join(', ')})`);
        if (typeof v !== 'string' || v === '') fail(where, `rule "${name}": select ${k} must be a glob string`);
        select[k as SelectKey] = picomatch(v, { bash: true, dot: true });
      }
    }

    if (!Array.isArray(r.allow)) fail(at([...path, 'allow']) ?? at(path), `rule "${name}": allow must be a list (it may be empty: allow: [])`);
    const allow = (r.allow as unknown[]).map((entry, j): Allow => {
      const ap = [...path, 'allow', j];
      const where = at(ap);
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(where, `rule "${name}": allow entry ${j + 1} must be a mapping with a cidr or a domain`);
      const a = entry as Record<string, unknown>;
      for (const k of Object.keys(a)) if (!ALLOW_KEYS.includes(k)) fail(at([...ap, k]) ?? where, `rule "${name}": unknown allow key "${k}" (known: ${ALLOW_KEYS.join(', ')})`);
      if (a.cidr === undefined && a.domain === undefined) fail(where, `rule "${name}": allow entry ${j + 1} needs a cidr or a domain`);
      const out: Allow = {};
      if (a.cidr !== undefined) {
        // ipaddr also takes "10.1/8"-style shorthands; only the usual forms are accepted
        if (typeof a.cidr !== 'string' || isIP(a.cidr.slice(0, a.cidr.indexOf('/'))) === 0 || !ipaddr.isValidCIDR(a.cidr)) fail(at([...ap, 'cidr']) ?? where, `rule "${name}": cidr must be an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/8, not ${JSON.stringify(a.cidr ?? null)}`);
        out.cidr = ipaddr.parseCIDR(a.cidr);
      }
      if (a.domain !== undefined) {
        if (typeof a.domain !== 'string' || a.domain.trim() === '') fail(at([...ap, 'domain']) ?? where, `rule "${name}": domain must be a name glob such as "*.example.com"`);
        out.domain = picomatch(a.domain.toLowerCase().replace(/\.$/, ''), { bash: true, dot: true, nocase: true });
      }
      if (a.ports !== undefined) out.ports = parsePorts(a.ports, (problem) => fail(at([...ap, 'ports']) ?? where, `rule "${name}": ${problem}`));
      if (a.direction !== undefined) {
        if (a.direction !== 'outbound' && a.direction !== 'inbound') fail(at([...ap, 'direction']) ?? where, `rule "${name}": direction must be outbound or inbound, not ${JSON.stringify(a.direction)}`);
        out.direction = a.direction;
      }
      return out;
    });
    return { name, select, allow };
  });
}

function parsePorts(v: unknown, fail: (problem: string) => never): [number, number][] {
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0) fail('ports must not be empty (leave it out for any port)');
  const port = (n: number) => Number.isInteger(n) && n >= 0 && n <= 65535;
  return list.map((p): [number, number] => {
    if (typeof p === 'number' && port(p)) return [p, p];
    const m = typeof p === 'string' ? /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(p) : null;
    if (m) {
      const lo = Number(m[1]);
      const hi = m[2] === undefined ? lo : Number(m[2]);
      if (port(lo) && port(hi) && lo <= hi) return [lo, hi];
    }
    return fail(`ports must be port numbers (0-65535) or "low-high" ranges, not ${JSON.stringify(p)}`);
  });
}
