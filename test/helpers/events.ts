/**
 * One normalised connection event for sink tests: an outbound curl (an
 * accept is inbound), with the close counters or the connect error its kind
 * carries; `over` replaces any field.
 */
import type { ConnKind } from '../../src/bpf/decode.js';
import type { ConnectionEvent, ProcessDetails } from '../../src/metadata/event.js';

export const sampleProcess: ProcessDetails = { pid: 4242, ppid: 1, uid: 1000, comm: 'curl', cmd: 'curl -s http://10.0.0.2/', exe: '/usr/bin/curl' };

export function sampleEvent(event: ConnKind, over: Partial<ConnectionEvent> = {}): ConnectionEvent {
  const e: ConnectionEvent = {
    // 2023-11-14T22:13:20.123456789Z
    timeSec: 1_700_000_000,
    timeNsec: 123_456_789,
    event,
    proto: 'tcp',
    direction: event === 'accept' ? 'inbound' : 'outbound',
    local: { ip: '10.0.0.1', port: 51000 },
    remote: { ip: '10.0.0.2', port: 80 },
    process: sampleProcess,
    container: null,
    pod: null,
    node: 'node-a',
    cgroupId: 12345,
    netns: 4026531840,
    connId: 77,
  };
  if (event === 'close') Object.assign(e, { bytesSent: 120, bytesReceived: 4096, durationMs: 12.5, srttUs: 250, retransmits: 2 });
  if (event === 'connect_failed') e.error = 'ECONNREFUSED';
  return { ...e, ...over };
}
