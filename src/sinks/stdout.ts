/**
 * stdout sink: one line per connection event, readable text (default) or
 * JSON (format=json). The JSON keys are the documented event format.
 */
import type { Writable } from 'node:stream';
import type { ConnectionEvent, Endpoint } from '../metadata/event.js';
import { ByteWriter } from '../util/byte-writer.js';
import { rfc3339 } from '../util/time.js';
import { toJsonObject, writeJsonEvent } from './json-event.js';
import type { Sink, SinkStats } from './sink.js';

export { toJsonObject };

export type StdoutFormat = 'text' | 'json';

/** One event's JSON line, without the newline (the sink writes the same bytes). */
export function toJsonLine(e: ConnectionEvent): string {
  const w = new ByteWriter(1024);
  writeJsonEvent(w, e);
  const line = w.take();
  return line.toString('utf8', 0, line.length - 1);
}

const hostPort = (p: Endpoint) => (p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`);

/** Text lines stay readable: a long command line is cut (JSON keeps it whole). */
const TEXT_CMD_MAX = 120;
const shorten = (cmd: string) => (cmd.length > TEXT_CMD_MAX ? `${cmd.slice(0, TEXT_CMD_MAX - 1)}…` : cmd);

/** One readable line, e.g. "... close tcp 10.0.0.1:5000 -> 10.0.0.2:80 pid=1 comm=curl sent=10 ...". */
export function toTextLine(e: ConnectionEvent): string {
  const arrow = e.direction === 'outbound' ? '->' : '<-';
  let line = `${rfc3339(e.timeSec, e.timeNsec)} ${e.event.padEnd(14)} ${e.proto} ${hostPort(e.local)} ${arrow} ${hostPort(e.remote)}`;
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

function writeTextLine(w: ByteWriter, e: ConnectionEvent): void {
  w.utf8(toTextLine(e));
  w.byte(0x0a);
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
  private readonly write1: (w: ByteWriter, e: ConnectionEvent) => void;
  private readonly out = new ByteWriter(1 << 16);
  private readonly counters: SinkStats = { sent: 0, dropped: 0 };
  private broken = false;

  constructor(options: StdoutSinkOptions) {
    this.stream = options.stream ?? process.stdout;
    this.write1 = options.format === 'json' ? writeJsonEvent : writeTextLine;
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
    // one write per batch, not per event
    const w = this.out;
    for (const e of events) this.write1(w, e);
    w.writeTo(this.stream);
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
