/**
 * stdout sink: one line per connection event, readable text (default) or
 * JSON (format=json). The JSON keys are the documented event format.
 */
import type { Writable } from 'node:stream';
import type { ConnectionEvent, ContainerDetails, Endpoint, ProcessDetails } from '../metadata/event.js';
import { rfc3339Nano } from '../util/time.js';
import type { Sink, SinkStats } from './sink.js';

export type StdoutFormat = 'text' | 'json';

/** The documented JSON object for one event (snake_case keys). */
export function toJsonObject(e: ConnectionEvent): Record<string, unknown> {
  const o: Record<string, unknown> = {
    time: rfc3339Nano(e.timeNs),
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
  if (e.event === 'close') {
    o.bytes_sent = e.bytesSent;
    o.bytes_received = e.bytesReceived;
    o.duration_ms = e.durationMs;
    o.srtt_us = e.srttUs;
    o.retransmits = e.retransmits;
  } else if (e.event === 'connect_failed') {
    o.error = e.error;
  }
  return o;
}

const processJson = new WeakMap<ProcessDetails, string>();

/** A process's JSON, made once per cached process object (they are never mutated). */
function jsonOfProcess(p: ProcessDetails | null): string {
  if (!p) return 'null';
  let s = processJson.get(p);
  if (s === undefined) {
    s = JSON.stringify({ pid: p.pid, ppid: p.ppid, uid: p.uid, comm: p.comm, cmd: p.cmd, exe: p.exe });
    processJson.set(p, s);
  }
  return s;
}

const containerJson = new Map<string, { c: ContainerDetails; json: string }>();

/** A container's JSON, remembered per id while its details stay the same. */
function jsonOfContainer(c: ContainerDetails | null): string {
  if (!c) return 'null';
  const hit = containerJson.get(c.id);
  if (hit && hit.c.name === c.name && hit.c.image === c.image && hit.c.runtime === c.runtime) return hit.json;
  const json = JSON.stringify({ id: c.id, name: c.name, image: c.image, runtime: c.runtime });
  if (containerJson.size >= 4096) containerJson.clear();
  containerJson.set(c.id, { c, json });
  return json;
}

let lastNode = '';
let lastNodeJson = '""';

/**
 * The same JSON as JSON.stringify(toJsonObject(e)), built by hand: the hot
 * path of the JSON sink. IPs, numbers and the enumerated strings need no
 * escaping; everything free-form goes through JSON.stringify.
 */
export function toJsonLine(e: ConnectionEvent): string {
  if (e.node !== lastNode) {
    lastNode = e.node;
    lastNodeJson = JSON.stringify(e.node);
  }
  let line =
    `{"time":"${rfc3339Nano(e.timeNs)}","event":"${e.event}","proto":"${e.proto}","direction":"${e.direction}",` +
    `"local":{"ip":"${e.local.ip}","port":${e.local.port}},"remote":{"ip":"${e.remote.ip}","port":${e.remote.port}},` +
    `"process":${jsonOfProcess(e.process)},"container":${jsonOfContainer(e.container)},"pod":${e.pod ? JSON.stringify(e.pod) : 'null'},` +
    (e.remotePod ? `"remote_pod":${JSON.stringify(e.remotePod)},` : '') +
    `"node":${lastNodeJson},"cgroup_id":${e.cgroupId},"netns":${e.netns},"conn_id":${e.connId}`;
  if (e.event === 'close') {
    line += `,"bytes_sent":${e.bytesSent},"bytes_received":${e.bytesReceived},"duration_ms":${e.durationMs},"srtt_us":${e.srttUs},"retransmits":${e.retransmits}`;
  } else if (e.event === 'connect_failed') {
    line += `,"error":${JSON.stringify(e.error)}`;
  }
  return `${line}}`;
}

const hostPort = (p: Endpoint) => (p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`);

/** Text lines stay readable: a long command line is cut (JSON keeps it whole). */
const TEXT_CMD_MAX = 120;
const shorten = (cmd: string) => (cmd.length > TEXT_CMD_MAX ? `${cmd.slice(0, TEXT_CMD_MAX - 1)}…` : cmd);

/** One readable line, e.g. "... close tcp 10.0.0.1:5000 -> 10.0.0.2:80 pid=1 comm=curl sent=10 ...". */
export function toTextLine(e: ConnectionEvent): string {
  const arrow = e.direction === 'outbound' ? '->' : '<-';
  let line = `${rfc3339Nano(e.timeNs)} ${e.event.padEnd(14)} ${e.proto} ${hostPort(e.local)} ${arrow} ${hostPort(e.remote)}`;
  line += e.process ? ` pid=${e.process.pid} comm=${JSON.stringify(e.process.comm)}` : ' pid=? comm=?';
  if (e.container) line += ` container=${e.container.name ?? e.container.id.slice(0, 12)}`;
  if (e.pod) line += ` pod=${e.pod.name ? `${e.pod.namespace}/${e.pod.name}` : `uid:${e.pod.uid}`}`;
  if (e.remotePod) line += ` remote_pod=${e.remotePod.namespace}/${e.remotePod.name}`;
  if (e.event === 'close') {
    line += ` sent=${e.bytesSent} received=${e.bytesReceived} duration=${e.durationMs?.toFixed(3)}ms srtt=${e.srttUs}us retrans=${e.retransmits}`;
  } else if (e.event === 'connect_failed') {
    line += ` error=${e.error}`;
  }
  if (e.process?.cmd) line += ` cmd=${JSON.stringify(shorten(e.process.cmd))}`;
  return line;
}

export interface StdoutSinkOptions {
  format: StdoutFormat;
  stream?: Writable;
  /** called once when the stream fails for good (EPIPE: its reader went away) */
  onClosed?: (err: NodeJS.ErrnoException) => void;
}

export class StdoutSink implements Sink {
  readonly name = 'stdout';
  private readonly stream: Writable;
  private readonly format: (e: ConnectionEvent) => string;
  private readonly counters: SinkStats = { sent: 0, dropped: 0 };
  private broken = false;

  constructor(options: StdoutSinkOptions) {
    this.stream = options.stream ?? process.stdout;
    this.format = options.format === 'json' ? toJsonLine : toTextLine;
    this.stream.on('error', (err: NodeJS.ErrnoException) => {
      if (this.broken) return;
      this.broken = true;
      options.onClosed?.(err);
    });
  }

  write(events: readonly ConnectionEvent[]): void {
    if (events.length === 0) return;
    if (this.broken) {
      this.counters.dropped += events.length;
      return;
    }
    // one write per batch, not per event; lines are encoded straight into a
    // fresh buffer (a stream may still hold the previous one)
    let out = Buffer.allocUnsafe(events.length * 512);
    let pos = 0;
    for (const e of events) {
      const line = this.format(e);
      // worst case 3 UTF-8 bytes per UTF-16 unit, plus the newline
      if (pos + line.length * 3 + 1 > out.length) {
        const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, pos + line.length * 3 + 1));
        out.copy(bigger, 0, 0, pos);
        out = bigger;
      }
      pos += out.write(line, pos, 'utf8');
      out[pos++] = 0x0a;
    }
    this.stream.write(out.subarray(0, pos));
    this.counters.sent += events.length;
  }

  /** Resolves once everything written has left the process (stdout itself stays open). */
  async close(): Promise<void> {
    if (this.broken) return;
    if (this.stream === process.stdout) {
      if (this.stream.writableLength === 0) return;
      // a reader that goes away meanwhile ends the wait too
      await new Promise<void>((resolve) => {
        for (const ev of ['drain', 'close', 'error']) this.stream.once(ev, () => resolve());
      });
      return;
    }
    await new Promise<void>((resolve) => this.stream.end(resolve));
  }

  stats(): SinkStats {
    return { ...this.counters };
  }
}
