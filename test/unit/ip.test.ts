/**
 * Address formatting: dotted IPv4 and RFC 5952 IPv6, cross-checked against
 * the WHATWG URL host serialiser Node ships (which follows RFC 5952 too).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatIPv4, formatIPv6 } from '../../src/util/ip.js';

/** 16 bytes from eight 16-bit groups. */
function v6(groups: number[]): Buffer {
  assert.equal(groups.length, 8);
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
}

describe('formatIPv4', () => {
  const cases: { bytes: number[]; want: string }[] = [
    { bytes: [127, 0, 0, 1], want: '127.0.0.1' },
    { bytes: [0, 0, 0, 0], want: '0.0.0.0' },
    { bytes: [255, 255, 255, 255], want: '255.255.255.255' },
    { bytes: [10, 1, 2, 3], want: '10.1.2.3' },
    { bytes: [192, 168, 0, 10], want: '192.168.0.10' },
  ];
  for (const c of cases) {
    test(c.want, () => {
      assert.equal(formatIPv4(Uint8Array.from(c.bytes), 0), c.want);
    });
  }

  test('at a non-zero offset', () => {
    const b = Buffer.from([9, 9, 9, 172, 16, 254, 1, 9]);
    assert.equal(formatIPv4(b, 3), '172.16.254.1');
  });
});

describe('formatIPv6 (RFC 5952)', () => {
  const cases: { name: string; groups: number[]; want: string }[] = [
    { name: 'loopback', groups: [0, 0, 0, 0, 0, 0, 0, 1], want: '::1' },
    { name: 'unspecified', groups: [0, 0, 0, 0, 0, 0, 0, 0], want: '::' },
    { name: 'documentation address', groups: [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], want: '2001:db8::1' },
    { name: 'trailing run', groups: [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], want: '2001:db8::' },
    { name: 'leading run', groups: [0, 0, 0, 0, 0, 0, 0x1234, 0x5678], want: '::1234:5678' },
    {
      name: 'two equal runs: the first is compressed',
      groups: [0x2001, 0xdb8, 0, 0, 1, 0, 0, 1],
      want: '2001:db8::1:0:0:1',
    },
    { name: 'the longer run wins over an earlier shorter one', groups: [0x2001, 0, 0, 1, 0, 0, 0, 1], want: '2001:0:0:1::1' },
    { name: 'a single zero group is not compressed', groups: [0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], want: '2001:db8:0:1:1:1:1:1' },
    { name: 'no zeros at all', groups: [1, 2, 3, 4, 5, 6, 7, 8], want: '1:2:3:4:5:6:7:8' },
    { name: 'leading zeros dropped', groups: [0x2001, 0x0db8, 0x00a0, 0x000b, 0, 0, 0, 0x0001], want: '2001:db8:a0:b::1' },
    { name: 'lower case hex', groups: [0xfe80, 0, 0, 0, 0xabcd, 0xef01, 0xdead, 0xbeef], want: 'fe80::abcd:ef01:dead:beef' },
    { name: 'all ones', groups: Array(8).fill(0xffff), want: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' },
    { name: 'run in the middle, ends nonzero', groups: [1, 0, 0, 0, 0, 0, 0, 2], want: '1::2' },
    // IPv4-mapped: dual-stack sockets show IPv4 peers this way
    { name: 'IPv4-mapped', groups: [0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0203], want: '10.1.2.3' },
    { name: 'IPv4-mapped loopback', groups: [0, 0, 0, 0, 0, 0xffff, 0x7f00, 0x0001], want: '127.0.0.1' },
    { name: 'IPv4-mapped any (::ffff:0:0)', groups: [0, 0, 0, 0, 0, 0xffff, 0, 0], want: '0.0.0.0' },
    // near misses of the mapped prefix stay IPv6
    { name: 'not mapped: ::fffe:a01:203', groups: [0, 0, 0, 0, 0, 0xfffe, 0x0a01, 0x0203], want: '::fffe:a01:203' },
    { name: 'not mapped: ::1:ffff:a01:203', groups: [0, 0, 0, 0, 1, 0xffff, 0x0a01, 0x0203], want: '::1:ffff:a01:203' },
    { name: 'not mapped: ::ff:a01:203', groups: [0, 0, 0, 0, 0, 0x00ff, 0x0a01, 0x0203], want: '::ff:a01:203' },
    { name: 'IPv4-compatible (deprecated) stays hex', groups: [0, 0, 0, 0, 0, 0, 0x0a01, 0x0203], want: '::a01:203' },
    { name: 'IPv4-translated ::ffff:0:a.b.c.d stays hex', groups: [0, 0, 0, 0, 0xffff, 0, 0x0a01, 0x0203], want: '::ffff:0:a01:203' },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.want}`, () => {
      assert.equal(formatIPv6(v6(c.groups), 0), c.want);
    });
  }

  test('at a non-zero offset, ignoring the bytes around it', () => {
    const b = Buffer.alloc(64, 0xee);
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]).copy(b, 23);
    assert.equal(formatIPv6(b, 23), '2001:db8::1');
    v6([0, 0, 0, 0, 0, 0xffff, 0xc0a8, 0x0001]).copy(b, 40);
    assert.equal(formatIPv6(b, 40), '192.168.0.1');
  });

  test('works on a plain Uint8Array view into a larger buffer', () => {
    const ab = new ArrayBuffer(40);
    const whole = new Uint8Array(ab);
    whole.set(v6([0xfe80, 0, 0, 0, 0, 0, 0, 0x42]), 8);
    assert.equal(formatIPv6(new Uint8Array(ab, 4), 4), 'fe80::42');
  });
});

describe('formatIPv6 against Node\'s URL serialiser', () => {
  /** mulberry32: small, seeded, deterministic */
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  const canonical = (text: string) => new URL(`http://[${text}]/`).hostname.slice(1, -1);

  test('500 random addresses with zero runs', () => {
    const rnd = prng(0x5952);
    let compressed = 0;
    let checked = 0;
    for (let n = 0; n < 500; n++) {
      const groups = Array.from({ length: 8 }, () => {
        const r = rnd();
        if (r < 0.5) return 0;
        if (r < 0.7) return Math.floor(rnd() * 16); // short groups: leading zeros
        return Math.floor(rnd() * 65536);
      });
      // mapped addresses are printed as IPv4 on purpose; URL prints ::ffff:hex
      if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) continue;
      const got = formatIPv6(v6(groups), 0);
      // Node parses the full, uncompressed form and serialises it canonically
      const full = groups.map((g) => g.toString(16).padStart(4, '0').toUpperCase()).join(':');
      assert.equal(got, canonical(full), `groups ${full}`);
      // and our text parses back to the same address
      assert.equal(canonical(got), got);
      if (got.includes('::')) compressed++;
      checked++;
    }
    assert.equal(checked, 500);
    // the generator really exercised "::" (and its absence)
    assert.ok(compressed > 250 && compressed < 500, `compressed ${compressed}`);
  });
});
