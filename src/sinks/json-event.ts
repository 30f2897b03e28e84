/**
 * The documented JSON form of a connection event: toJsonObject() is the
 * reference (snake_case keys, in order); writeJsonEvent() writes the same
 * JSON straight into a ByteWriter, the hot path of `stdout,format=json`.
 *
 * The fast path keeps the bytes of everything that repeats: the fixed
 * fragments, the second's time prefix, and one block per process object
 * with its process, container and pod JSON, node, cgroup and netns (the
 * process cache and the enricher hand out the same objects while nothing
 * changed). Per event it only writes numbers and IP addresses.
 */
import type { ConnectionEvent, ContainerDetails, PodDetails, ProcessDetails, RemotePod } from '../metadata/event.js';
import { utf8, type ByteWriter } from '../util/byte-writer.js';
import { rfc3339 } from '../util/time.js';
import { PerProcess } from '../metadata/per-process.js';
import { Fragments, SecondHead } from './line-parts.js';

/** The documented JSON object for one event (snake_case keys). */
export function toJsonObject(e: ConnectionEvent): Record<string, unknown> {
  const o: Record<string, unknown> = {
    time: rfc3339(e.timeSec, e.timeNsec),
    event: e.event,
    proto: e.proto,
    direction: e.direction,
    local: e.local,
    remote: e.remote,
    process: e.process,
    container: e.container,
    pod: e.pod,
    ...(e.remotePod ? { remote_pod: e.remotePod } : {}),
    node: e.node,
    cgroup_id: e.cgroupId,
    netns: e.netns,
    conn_id: e.connId,
  };
  if (e.existing) o.existing = true;
  switch (e.event) {
    case 'close':
      o.bytes_sent = e.bytesSent;
      o.bytes_received = e.bytesReceived;
      o.duration_ms = e.durationMs;
      o.srtt_us = e.srttUs;
      o.retransmits = e.retransmits;
      if (e.bytesSentDelta !== undefined) {
        o.bytes_sent_delta = e.bytesSentDelta;
        o.bytes_received_delta = e.bytesReceivedDelta;
        o.retransmits_delta = e.retransmitsDelta;
      }
      break;
    case 'update':
      o.bytes_sent = e.bytesSent;
      o.bytes_received = e.bytesReceived;
      if (e.proto === 'udp') {
        o.datagrams_sent = e.datagramsSent;
        o.datagrams_received = e.datagramsReceived;
      } else {
        o.duration_ms = e.durationMs;
        o.srtt_us = e.srttUs;
        o.retransmits = e.retransmits;
      }
      break;
    case 'connect':
    case 'accept':
      if (e.existing) {
        o.bytes_sent = e.bytesSent;
        o.bytes_received = e.bytesReceived;
      }
      break;
    case 'connect_failed':
      o.error = e.error;
      break;
    case 'alert':
      o.rule = e.rule;
      o.trigger = e.trigger;
      if (e.error !== undefined) o.error = e.error;
      break;
  }
  return o;
}

const NULL = utf8('null');

// fixed fragments, named after the key they end in
const F_BYTES_SENT = utf8(',"bytes_sent":');
const F_BYTES_RECEIVED = utf8(',"bytes_received":');
const F_DURATION = utf8(',"duration_ms":');
const F_SRTT = utf8(',"srtt_us":');
const F_RETRANSMITS = utf8(',"retransmits":');
const F_ERROR = utf8(',"error":');
const F_BYTES_SENT_DELTA = utf8(',"bytes_sent_delta":');
const F_BYTES_RECEIVED_DELTA = utf8(',"bytes_received_delta":');
const F_RETRANSMITS_DELTA = utf8(',"retransmits_delta":');
const F_DATAGRAMS_SENT = utf8(',"datagrams_sent":');
const F_DATAGRAMS_RECEIVED = utf8(',"datagrams_received":');
const F_EXISTING = utf8(',"existing":true');
const F_RULE = utf8(',"rule":');
const F_NAME = utf8(',"name":');
const F_TRIGGER = utf8(',"trigger":');
const F_REMOTE_NULL = utf8('},"remote":null');

/**
 * The bytes around an address, per address: `IP","port":` for the local one,
 * `},"remote":{"ip":"IP","port":` for the remote one. A node talks to a
 * bounded set of addresses; past 4096 the map starts over.
 */
const localIps = new Map<string, Uint8Array>();
const remoteIps = new Map<string, Uint8Array>();

function ipBytes(map: Map<string, Uint8Array>, ip: string, before: string): Uint8Array {
  let b = map.get(ip);
  if (b === undefined) {
    if (map.size >= 4096) map.clear();
    b = utf8(`${before}${ip}","port":`);
    map.set(ip, b);
  }
  return b;
}

/** From the end of the time to the first local IP: `Z","event":...,"local":{"ip":"`, per kind, protocol and direction. */
const heads = new Fragments(
  (event, proto, direction) =>
    `Z","event":${JSON.stringify(event)},"proto":${JSON.stringify(proto)},"direction":${JSON.stringify(direction)},"local":{"ip":"`,
);

/** `{"time":"2026-11-26T10:45:01.` for the current second. */
const timeHead = new SecondHead('{"time":"');

// key order is the documented one, whatever order the object was built in
const processFields = (p: ProcessDetails) => ({ pid: p.pid, ppid: p.ppid, uid: p.uid, comm: p.comm, cmd: p.cmd, ...(p.cmdTruncated ? { cmd_truncated: true } : {}), exe: p.exe });
const containerFields = (c: ContainerDetails) => ({ id: c.id, name: c.name, image: c.image, runtime: c.runtime });
const podFields = (p: PodDetails) => ({ name: p.name, namespace: p.namespace, uid: p.uid });
const remotePodFields = (p: RemotePod) => ({ name: p.name, namespace: p.namespace });

/** JSON strings of short, repeating values (errno names). */
const strings = new Map<string, Uint8Array>();

function jsonString(s: string): Uint8Array {
  let b = strings.get(s);
  if (b === undefined) {
    if (strings.size >= 1024) strings.clear();
    b = utf8(JSON.stringify(s));
    strings.set(s, b);
  }
  return b;
}

/**
 * Everything from the end of the remote port to the conn_id value is the same
 * for all events of one process in one container, cgroup and netns: it is
 * kept as one block per process object and made again when any part changes.
 */
interface Block {
  container: ContainerDetails | null;
  pod: PodDetails | null;
  remotePod: RemotePod | undefined;
  node: string;
  cgroupId: number;
  netns: number;
  bytes: Uint8Array;
  /**
   * The same without its first byte (the `}` that closes the remote
   * object), for listeners: a Buffer of its own, not a subarray, which
   * (seen once) made bytes() several times slower for every later event
   */
  afterNullRemote: Uint8Array;
}

function makeBlock(e: ConnectionEvent): Block {
  const parts = [
    '},"process":',
    e.process ? JSON.stringify(processFields(e.process)) : 'null',
    ',"container":',
    e.container ? JSON.stringify(containerFields(e.container)) : 'null',
    ',"pod":',
    e.pod ? JSON.stringify(podFields(e.pod)) : 'null',
    e.remotePod ? `,"remote_pod":${JSON.stringify(remotePodFields(e.remotePod))}` : '',
    `,"node":${JSON.stringify(e.node)},"cgroup_id":${e.cgroupId},"netns":${e.netns},"conn_id":`,
  ];
  const text = parts.join('');
  return {
    container: e.container,
    pod: e.pod,
    remotePod: e.remotePod,
    node: e.node,
    cgroupId: e.cgroupId,
    netns: e.netns,
    bytes: utf8(text),
    afterNullRemote: utf8(text.slice(1)),
  };
}

const blocks = new PerProcess<Block>(
  (b, e) =>
    b.container === e.container &&
    b.pod === e.pod &&
    b.remotePod === e.remotePod &&
    b.node === e.node &&
    b.cgroupId === e.cgroupId &&
    b.netns === e.netns,
  makeBlock,
);

/** `,"bytes_sent":N,"bytes_received":M`, which several kinds carry. */
function writeByteCounts(w: ByteWriter, e: ConnectionEvent): void {
  w.bytes(F_BYTES_SENT);
  w.number(e.bytesSent ?? NaN);
  w.bytes(F_BYTES_RECEIVED);
  w.number(e.bytesReceived ?? NaN);
}

/** `,"duration_ms":..,"srtt_us":..,"retransmits":..` of a close or a TCP update. */
function writeTimings(w: ByteWriter, e: ConnectionEvent): void {
  w.bytes(F_DURATION);
  w.millisFromNanos(e.durationMs ?? NaN);
  w.bytes(F_SRTT);
  w.number(e.srttUs ?? NaN);
  w.bytes(F_RETRANSMITS);
  w.number(e.retransmits ?? NaN);
}

/** Writes the event as one JSON line, ending in a newline; the same JSON as JSON.stringify(toJsonObject(e)). */
export function writeJsonEvent(w: ByteWriter, e: ConnectionEvent): void {
  w.bytes(timeHead.get(e.timeSec));
  w.nineDigits(e.timeNsec);
  w.bytes(heads.get(e.event, e.proto, e.direction));
  w.bytes(ipBytes(localIps, e.local.ip, ''));
  w.uint(e.local.port);
  const block = blocks.get(e);
  if (e.remote) {
    w.bytes(ipBytes(remoteIps, e.remote.ip, '},"remote":{"ip":"'));
    w.uint(e.remote.port);
    if (e.remote.name !== undefined) {
      w.bytes(F_NAME);
      w.utf8(JSON.stringify(e.remote.name));
    }
    w.bytes(block.bytes);
  } else {
    w.bytes(F_REMOTE_NULL);
    w.bytes(block.afterNullRemote);
  }
  w.number(e.connId);
  if (e.existing) w.bytes(F_EXISTING);
  switch (e.event) {
    case 'close':
      writeByteCounts(w, e);
      writeTimings(w, e);
      if (e.bytesSentDelta !== undefined) {
        w.bytes(F_BYTES_SENT_DELTA);
        w.number(e.bytesSentDelta);
        w.bytes(F_BYTES_RECEIVED_DELTA);
        w.number(e.bytesReceivedDelta ?? NaN);
        w.bytes(F_RETRANSMITS_DELTA);
        w.number(e.retransmitsDelta ?? NaN);
      }
      break;
    case 'update':
      writeByteCounts(w, e);
      if (e.proto === 'udp') {
        w.bytes(F_DATAGRAMS_SENT);
        w.number(e.datagramsSent ?? NaN);
        w.bytes(F_DATAGRAMS_RECEIVED);
        w.number(e.datagramsReceived ?? NaN);
      } else {
        writeTimings(w, e);
      }
      break;
    case 'connect':
    case 'accept':
      if (e.existing) writeByteCounts(w, e);
      break;
    case 'connect_failed':
      w.bytes(F_ERROR);
      w.bytes(e.error === undefined ? NULL : jsonString(e.error));
      break;
    case 'alert':
      w.bytes(F_RULE);
      w.bytes(e.rule === undefined ? NULL : jsonString(e.rule));
      w.bytes(F_TRIGGER);
      w.bytes(e.trigger === undefined ? NULL : jsonString(e.trigger));
      if (e.error !== undefined) {
        w.bytes(F_ERROR);
        w.bytes(jsonString(e.error));
      }
      break;
  }
  w.byte(0x7d); // }
  w.byte(0x0a); // \n
}
