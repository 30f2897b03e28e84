/**
 * DNS names of remote addresses: the answers processes on the node receive
 * (UDP from port 53, captured in the kernel) are parsed with dns-packet,
 * and each A and AAAA address is remembered, per network namespace, under
 * the name that was asked for (a CNAME chain leads back to the question),
 * until its TTL runs out. Bounded: past `maxEntries` the oldest go first.
 */
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';
import ipaddr from 'ipaddr.js';
import { formatIPv4, formatIPv6 } from '../util/ip.js';

export interface DnsNamesStats {
  /** answers parsed */
  answers: number;
  /** payloads that were not DNS answers dns-packet could read */
  malformed: number;
  /** addresses remembered now */
  size: number;
  evicted: number;
}

interface Entry {
  name: string;
  expiresMs: number;
  netns: number;
  ip: string;
}

/** An address as events write it (the decoder's own formatting of its bytes). */
function canonical(ip: string): string | undefined {
  const kind = isIP(ip);
  if (kind === 0) return undefined;
  const bytes = Uint8Array.from(ipaddr.parse(ip).toByteArray());
  return kind === 4 ? formatIPv4(bytes, 0) : formatIPv6(bytes, 0);
}

export class DnsNames {
  /** netns -> address -> name: looked up per connection, so no key string is built */
  private readonly byNetns = new Map<number, Map<string, Entry>>();
  /** every entry, oldest first, for the bound */
  private readonly order = new Set<Entry>();
  private readonly maxEntries: number;
  private readonly counters = { answers: 0, malformed: 0, evicted: 0 };

  constructor(options: { maxEntries?: number } = {}) {
    this.maxEntries = options.maxEntries ?? 65_536;
  }

  /** Learns the addresses of one answer received in `netns` at `nowMs`. */
  learn(netns: number, payload: Uint8Array, nowMs: number): void {
    let p: dnsPacket.Packet;
    try {
      p = dnsPacket.decode(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
    } catch {
      this.counters.malformed++;
      return;
    }
    // an answer (QR) with RCODE 0 (NOERROR)
    if (p.type !== 'response' || ((p.flags ?? 0) & 0x0f) !== 0) return;
    const asked = p.questions?.[0]?.name;
    if (!asked) return;
    this.counters.answers++;
    // the chain from the question: each CNAME's target stands for the name asked
    const standsFor = new Map<string, string>([[asked.toLowerCase(), asked.toLowerCase()]]);
    const answers = (p.answers ?? []) as dnsPacket.Answer[];
    for (let changed = true; changed; ) {
      changed = false;
      for (const a of answers) {
        if (a.type !== 'CNAME') continue;
        const from = standsFor.get(a.name.toLowerCase());
        const to = String(a.data).toLowerCase();
        if (from !== undefined && !standsFor.has(to)) {
          standsFor.set(to, from);
          changed = true;
        }
      }
    }
    for (const a of answers) {
      if (a.type !== 'A' && a.type !== 'AAAA') continue;
      const name = standsFor.get(a.name.toLowerCase());
      const ip = canonical(String(a.data));
      if (name === undefined || ip === undefined) continue;
      let addresses = this.byNetns.get(netns);
      if (addresses === undefined) {
        addresses = new Map();
        this.byNetns.set(netns, addresses);
      }
      const old = addresses.get(ip);
      if (old !== undefined) this.order.delete(old);
      const entry: Entry = { name, expiresMs: nowMs + Math.max(1, a.ttl ?? 0) * 1000, netns, ip };
      addresses.set(ip, entry);
      this.order.add(entry);
      if (this.order.size > this.maxEntries) {
        this.forget(this.order.values().next().value as Entry);
        this.counters.evicted++;
      }
    }
  }

  /** The name `ip` was resolved from in `netns`, while its TTL lasts. */
  nameOf(netns: number, ip: string, nowMs: number): string | undefined {
    const e = this.byNetns.get(netns)?.get(ip);
    if (e === undefined) return undefined;
    if (e.expiresMs < nowMs) {
      this.forget(e);
      return undefined;
    }
    return e.name;
  }

  private forget(e: Entry): void {
    this.order.delete(e);
    const addresses = this.byNetns.get(e.netns);
    addresses?.delete(e.ip);
    if (addresses?.size === 0) this.byNetns.delete(e.netns);
  }

  stats(): DnsNamesStats {
    return { ...this.counters, size: this.order.size };
  }
}
