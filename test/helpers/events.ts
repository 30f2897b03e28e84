/**
 * One normalised connection event for sink tests: an outbound curl (an
 * accept, listen or unlisten is inbound; a listener has no remote), with
 * the counters or the connect error its kind carries; `over` replaces any
 * field. A UDP update: sampleEvent('update', udpUpdate).
 */
import type { ConnKind } from '../../src/bpf/decode.js';
import type { ConnectionEvent, ProcessDetails } from '../../src/metadata/event.js';

export const sampleProcess: ProcessDetails = { pid: 4242, ppid: 1, uid: 1000, comm: 'curl', cmd: 'curl -s http://10.0.0.2/', exe: '/usr/bin/curl' };

export function sampleEvent(event: ConnKind | 'alert', over: Partial<ConnectionEvent> = {}): ConnectionEvent {
  const e: ConnectionEvent = {
    // 2023-11-14T22:13:20.123456789Z
    timeSec: 1_700_000_000,
    timeNsec: 123_456_789,
    event,
    proto: 'tcp',
    direction: event === 'accept' || event === 'listen' || event === 'unlisten' ? 'inbound' : 'outbound',
    local: { ip: '10.0.0.1', port: 51000 },
    remote: event === 'listen' || event === 'unlisten' ? null : { ip: '10.0.0.2', port: 80 },
    process: sampleProcess,
    container: null,
    pod: null,
    node: 'node-a',
    cgroupId: 12345,
    netns: 4026531840,
    connId: 77,
  };
  if (event === 'close') {
    Object.assign(e, {
      bytesSent: 120,
      bytesReceived: 4096,
      durationMs: 12.5,
      srttUs: 250,
      retransmits: 2,
      bytesSentDelta: 20,
      bytesReceivedDelta: 96,
      retransmitsDelta: 1,
    });
  }
  if (event === 'update') Object.assign(e, { bytesSent: 100, bytesReceived: 4000, durationMs: 10_000.25, srttUs: 250, retransmits: 1 });
  if (event === 'connect_failed') e.error = 'ECONNREFUSED';
  return { ...e, ...over };
}

/** What makes a sampleEvent('update') a UDP one. */
export const udpUpdate: Partial<ConnectionEvent> = {
  proto: 'udp',
  remote: { ip: '10.0.0.53', port: 53 },
  bytesSent: 40,
  bytesReceived: 120,
  datagramsSent: 1,
  datagramsReceived: 1,
  durationMs: undefined,
  srttUs: undefined,
  retransmits: undefined,
};
