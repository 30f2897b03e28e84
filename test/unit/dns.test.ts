/**
 * DNS names of remote addresses: answers parsed with dns-packet (as the
 * kernel hands them over: the UDP payload), CNAME chains followed back to
 * the name asked, per network namespace, for the TTL, bounded; and the
 * name on events in every output.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { DnsNames } from '../../src/metadata/dns.js';
import { Policy } from '../../src/policy/policy.js';
import { toNewRelicEvent } from '../../src/sinks/newrelic.js';
import { toJsonLine, toJsonObject, toTextLine } from '../../src/sinks/stdout.js';
import { sampleEvent } from '../helpers/events.js';

const answer = (question: string, answers: dnsPacket.Answer[], rcode = 0) =>
  dnsPacket.encode({ type: 'response', id: 7, flags: dnsPacket.RECURSION_DESIRED | rcode, questions: [{ type: 'A', name: question }], answers });

describe('DnsNames', () => {
  test('A and AAAA addresses are named by the question, through a CNAME chain', () => {
    const d = new DnsNames();
    d.learn(1, answer('api.example.com', [
      { type: 'CNAME', name: 'api.example.com', ttl: 60, data: 'lb.example.net' },
      { type: 'CNAME', name: 'lb.example.net', ttl: 60, data: 'edge.cdn.test' },
      { type: 'A', name: 'edge.cdn.test', ttl: 30, data: '203.0.113.7' },
      { type: 'AAAA', name: 'edge.cdn.test', ttl: 30, data: '2001:db8:0:0:0:0:0:7' },
      { type: 'A', name: 'unrelated.test', ttl: 30, data: '198.51.100.1' },
    ]), 1_000);
    assert.equal(d.nameOf(1, '203.0.113.7', 2_000), 'api.example.com');
    // as the decoder writes IPv6 (RFC 5952)
    assert.equal(d.nameOf(1, '2001:db8::7', 2_000), 'api.example.com');
    assert.equal(d.nameOf(1, '198.51.100.1', 2_000), undefined, 'an address outside the chain');
    assert.equal(d.nameOf(2, '203.0.113.7', 2_000), undefined, 'another network namespace');
    assert.equal(d.nameOf(1, '203.0.113.7', 31_001), undefined, 'after its TTL');
    assert.deepEqual(d.stats(), { answers: 1, malformed: 0, evicted: 0, size: 1 });
  });

  test('errors, queries and junk teach nothing; junk is counted', () => {
    const d = new DnsNames();
    d.learn(1, answer('gone.test', [{ type: 'A', name: 'gone.test', ttl: 30, data: '192.0.2.1' }], 3 /* NXDOMAIN */), 0);
    d.learn(1, dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'q.test' }] }), 0);
    d.learn(1, Buffer.from('not dns at all'), 0);
    assert.equal(d.nameOf(1, '192.0.2.1', 1), undefined);
    assert.deepEqual(d.stats(), { answers: 0, malformed: 1, evicted: 0, size: 0 });
  });

  test('bounded: the oldest addresses go first, and are counted', () => {
    const d = new DnsNames({ maxEntries: 2 });
    for (const [i, ip] of ['192.0.2.1', '192.0.2.2', '192.0.2.3'].entries()) d.learn(1, answer(`h${i}.test`, [{ type: 'A', name: `h${i}.test`, ttl: 60, data: ip }]), 0);
    assert.deepEqual(['192.0.2.1', '192.0.2.2', '192.0.2.3'].map((ip) => d.nameOf(1, ip, 1)), [undefined, 'h1.test', 'h2.test']);
    assert.equal(d.stats().evicted, 1);
  });
});

describe('remote.name in events', () => {
  const e = sampleEvent('connect', { remote: { ip: '203.0.113.7', port: 443, name: 'api.example.com' } });
  test('JSON, text and New Relic carry it; without it nothing changes', () => {
    assert.deepEqual((toJsonObject(e).remote as Record<string, unknown>).name, 'api.example.com');
    assert.deepEqual(JSON.parse(toJsonLine(e)), toJsonObject(e));
    assert.match(toTextLine(e), / -> 203\.0\.113\.7:443 \(api\.example\.com\) /);
    assert.equal(toNewRelicEvent(e)['remote.name'], 'api.example.com');
    const plain = sampleEvent('connect');
    assert.equal('name' in (JSON.parse(toJsonLine(plain)).remote as object), false);
    assert.equal('remote.name' in toNewRelicEvent(plain), false);
  });

  test('policy domain entries match the name, alone or with a CIDR', () => {
    const p = Policy.parse('rules:\n  - name: named\n    allow:\n      - { domain: "*.example.com", ports: [443] }\n      - { domain: db.internal, cidr: 10.0.0.0/8 }\n', 'p.yaml');
    const v = (ip: string, port: number, name?: string) => p.violated(sampleEvent('connect', { remote: name ? { ip, port, name } : { ip, port } }))?.name ?? 'permitted';
    assert.equal(v('203.0.113.7', 443, 'api.example.com'), 'permitted');
    assert.equal(v('203.0.113.7', 443, 'API.Example.com'), 'permitted', 'names compare without case');
    assert.equal(v('203.0.113.7', 443), 'named', 'no name known');
    assert.equal(v('203.0.113.7', 80, 'api.example.com'), 'named', 'port');
    assert.equal(v('10.1.1.1', 5432, 'db.internal'), 'permitted');
    assert.equal(v('192.168.1.1', 5432, 'db.internal'), 'named', 'the CIDR must hold too');
    assert.throws(() => Policy.parse('rules:\n  - name: x\n    allow:\n      - { ports: [1] }\n', 'p.yaml'), /needs a cidr or a domain/);
  });
});
