/**
 * stdout sink: one line per connection event, readable text (default) or
 * JSON (format=json). The JSON keys are the documented event format.
 */
import type { Writable } from 'node:stream';
import type { ConnectionEvent, Endpoint } from '../metadata/event.js';
import { ByteWriter } from '../util/byte-writer.js';
import { rfc3339 } from '../util/time.js';
import { toJsonObject, writeJsonEvent } from './json-event.js';
import { PerProcess } from '../metadata/per-process.js';
import { Fragments, SecondHead } from './line-parts.js';
import type { Sink, SinkStats } from './sink.js';
import { FdStream } from './fd-stream.js';
import type { Logger } from '../util/log.js';

export { toJsonObject };

export type StdoutFormat = 'text' | 'json';

/** One event's JSON line, without the newline (the sink writes the same bytes). */
export function toJsonLine(e: ConnectionEvent): string {
  const w = new ByteWriter(1024);
  writeJsonEvent(w, e);
  const line = w.take();
  return line.toString('utf8', 0, line.length - 1);
}

/**
 * A string from outside (a process, a runtime, a workload's labels) in
 * double quotes, with every control character escaped: JSON's escapes, plus
 * DEL, the C1 controls (terminal escapes), line and paragraph separators and
 * the bidirectional overrides that could make a line read as another.
 */
export function quoteText(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A name as it is when it is a plain word (as container and pod names are), else quoted: no workload can forge a field or a line. */
export function textWord(s: string): string {
  return /^[A-Za-z0-9._:/@+-]+$/.test(s) ? s : quoteText(s);
}

const hostPort = (p: Endpoint) => (p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`);

/** Text lines stay readable: a long command line is cut (JSON keeps it whole). */
const TEXT_CMD_MAX = 120;
const shorten = (cmd: string) => (cmd.length > TEXT_CMD_MAX ? `${cmd.slice(0, TEXT_CMD_MAX - 1)}…` : cmd);

/**
 * One readable line, e.g. "... close tcp 10.0.0.1:5000 -> 10.0.0.2:80 pid=1 comm=curl sent=10 ...";
 * a listener has no arrow and no remote; update lines carry what moved since the previous one.
 */
export function toTextLine(e: ConnectionEvent): string {
  const arrow = e.direction === 'outbound' ? '->' : '<-';
  let line = `${rfc3339(e.timeSec, e.timeNsec)} ${e.event.padEnd(14)} ${e.proto} ${hostPort(e.local)}`;
  if (e.remote) line += ` ${arrow} ${hostPort(e.remote)}${e.remote.name !== undefined ? ` (${textWord(e.remote.name)})` : ''}`;
  line += whoText(e);
  if (e.existing) line += ' existing';
  if (e.event === 'close') {
    line += ` sent=${e.bytesSent} received=${e.bytesReceived} duration=${e.durationMs?.toFixed(3)}ms srtt=${e.srttUs}us retrans=${e.retransmits}`;
  } else if (e.event === 'update') {
    line += ` sent=${e.bytesSent} received=${e.bytesReceived}`;
    if (e.proto === 'udp') line += ` datagrams_sent=${e.datagramsSent} datagrams_received=${e.datagramsReceived}`;
  } else if (e.event === 'connect_failed') {
    line += ` error=${e.error}`;
  } else if (e.event === 'alert') {
    line += alertText(e);
  }
  if (e.process?.cmd) line += ` cmd=${quoteText(shorten(e.process.cmd))}`;
  return line;
}

const ascii = (s: string): Uint8Array => Buffer.from(s, 'latin1');
const T_ARROW_OUT = ascii(' -> ');
const T_ARROW_IN = ascii(' <- ');
const T_SENT = ascii(' sent=');
const T_RECEIVED = ascii(' received=');
const T_DURATION = ascii(' duration=');
const T_SRTT = ascii('ms srtt=');
const T_RETRANS = ascii('us retrans=');
const T_ERROR = ascii(' error=');
const T_EXISTING = ascii(' existing');
const T_DGRAMS_SENT = ascii(' datagrams_sent=');
const T_DGRAMS_RECEIVED = ascii(' datagrams_received=');

const textTime = new SecondHead('');
/** From the end of the time's nanoseconds to the local address: "Z close          tcp ", per kind and protocol. */
const kindHeads = new Fragments((event, proto) => `Z ${event.padEnd(14)} ${proto} `);

/** What a text line says of its process, container and pods: the same for all events of a process while they stay the same. */
interface TextParts {
  container: ConnectionEvent['container'];
  pod: ConnectionEvent['pod'];
  remotePod: ConnectionEvent['remotePod'];
  /** " pid=.. comm=.." and container, pod, remote_pod */
  who: Uint8Array;
  /** " cmd=..." or nothing */
  cmd: Uint8Array;
}

/** " rule=NAME trigger=KIND" and the error an alert's connect failed with. */
function alertText(e: ConnectionEvent): string {
  return ` rule=${textWord(e.rule ?? '')} trigger=${e.trigger}${e.error !== undefined ? ` error=${e.error}` : ''}`;
}

/** " pid=.. comm=.." and the container, pod and remote pod of a text line. */
function whoText(e: ConnectionEvent): string {
  let who = e.process ? ` pid=${e.process.pid} comm=${quoteText(e.process.comm)}` : ' pid=? comm=?';
  if (e.container) who += ` container=${textWord(e.container.name ?? e.container.id.slice(0, 12))}`;
  if (e.pod) who += ` pod=${textWord(e.pod.name ? `${e.pod.namespace}/${e.pod.name}` : `uid:${e.pod.uid}`)}`;
  if (e.remotePod) who += ` remote_pod=${textWord(`${e.remotePod.namespace}/${e.remotePod.name}`)}`;
  return who;
}

function makeParts(e: ConnectionEvent): TextParts {
  const cmd = e.process?.cmd ? ` cmd=${quoteText(shorten(e.process.cmd))}` : '';
  return { container: e.container, pod: e.pod, remotePod: e.remotePod, who: Buffer.from(whoText(e), 'utf8'), cmd: Buffer.from(cmd, 'utf8') };
}

const textParts = new PerProcess<TextParts>((p, e) => p.container === e.container && p.pod === e.pod && p.remotePod === e.remotePod, makeParts);

function writeEndpoint(w: ByteWriter, p: Endpoint): void {
  if (p.ip.includes(':')) {
    w.byte(0x5b); // [
    w.ascii(p.ip);
    w.byte(0x5d); // ]
  } else {
    w.ascii(p.ip);
  }
  w.byte(0x3a); // :
  w.uint(p.port);
}

/** A number as a template literal shows it (undefined too), for fields a close always has. */
function writeShown(w: ByteWriter, n: number | undefined): void {
  if (n === undefined) w.ascii('undefined');
  else w.number(n);
}

/** toTextLine(e) and a newline, written without building the string: the hot path of the default sink. */
export function writeTextLine(w: ByteWriter, e: ConnectionEvent): void {
  w.bytes(textTime.get(e.timeSec));
  w.nineDigits(e.timeNsec);
  w.bytes(kindHeads.get(e.event, e.proto));
  writeEndpoint(w, e.local);
  if (e.remote) {
    w.bytes(e.direction === 'outbound' ? T_ARROW_OUT : T_ARROW_IN);
    writeEndpoint(w, e.remote);
    if (e.remote.name !== undefined) w.utf8(` (${textWord(e.remote.name)})`);
  }
  const parts = textParts.get(e);
  w.bytes(parts.who);
  if (e.existing) w.bytes(T_EXISTING);
  if (e.event === 'update') {
    w.bytes(T_SENT);
    writeShown(w, e.bytesSent);
    w.bytes(T_RECEIVED);
    writeShown(w, e.bytesReceived);
    if (e.proto === 'udp') {
      w.bytes(T_DGRAMS_SENT);
      writeShown(w, e.datagramsSent);
      w.bytes(T_DGRAMS_RECEIVED);
      writeShown(w, e.datagramsReceived);
    }
  } else if (e.event === 'close') {
    w.bytes(T_SENT);
    writeShown(w, e.bytesSent);
    w.bytes(T_RECEIVED);
    writeShown(w, e.bytesReceived);
    w.bytes(T_DURATION);
    w.ascii(e.durationMs === undefined ? 'undefined' : e.durationMs.toFixed(3));
    w.bytes(T_SRTT);
    writeShown(w, e.srttUs);
    w.bytes(T_RETRANS);
    writeShown(w, e.retransmits);
  } else if (e.event === 'connect_failed') {
    w.bytes(T_ERROR);
    w.utf8(String(e.error));
  } else if (e.event === 'alert') {
    w.utf8(alertText(e));
  }
  w.bytes(parts.cmd);
  w.byte(0x0a);
}

export interface StdoutSinkOptions {
  format: StdoutFormat;
  /** default: file descriptor 1 written through an FdStream (see fd-stream.ts) */
  stream?: Writable | FdStream;
  /** called once when the stream fails for good (EPIPE: its reader went away) */
  onClosed?: (err: NodeJS.ErrnoException) => void;
  /** output held for a reader that is not reading, at most (default 16 MiB); past it, batches are dropped and counted */
  maxBufferBytes?: number;
  /** for the lines that say dropping began and ended */
  log?: Logger;
  /** how long close() waits for a reader to take what is written (default 5000 ms); what it did not take is counted as dropped */
  closeTimeoutMs?: number;
}

export const DEFAULT_STDOUT_BUFFER_BYTES = 16 << 20;

export class StdoutSink implements Sink {
  readonly name = 'stdout';
  private readonly stream: Writable | FdStream;
  private readonly write1: (w: ByteWriter, e: ConnectionEvent) => void;
  private readonly out = new ByteWriter(1 << 16);
  private readonly counters: SinkStats = { sent: 0, dropped: 0 };
  private broken = false;
  private readonly maxBufferBytes: number;
  private readonly log: Logger | undefined;
  /** events dropped since the reader fell behind; undefined while it keeps up */
  private droppingSince: number | undefined;
  /** events written to the stream that it has not finished with */
  private pending = 0;
  /** set when close() gave up waiting: later completions are not counted again */
  private abandoned = false;
  private readonly closeTimeoutMs: number;
  private settled: (() => void) | undefined;

  constructor(options: StdoutSinkOptions) {
    this.stream = options.stream ?? new FdStream(1);
    this.maxBufferBytes = options.maxBufferBytes ?? DEFAULT_STDOUT_BUFFER_BYTES;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    this.log = options.log;
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
    // a reader that stops reading (convis | less, a stuck pipe) must not make
    // memory grow or hold up the other sinks: past the bound, drop and count
    const w = this.out;
    if (w.heldBytes >= this.maxBufferBytes) {
      if (this.droppingSince === undefined) {
        this.droppingSince = this.counters.dropped;
        this.log?.warn(`stdout: the reader is not keeping up (${this.maxBufferBytes} bytes waiting); dropping events until it does`);
      }
      this.counters.dropped += events.length;
      return;
    }
    if (this.droppingSince !== undefined) {
      this.log?.warn(`stdout: the reader caught up; ${this.counters.dropped - this.droppingSince} events were dropped`);
      this.droppingSince = undefined;
    }
    // one write per batch, not per event
    for (const e of events) this.write1(w, e);
    // sent once the stream is done with them: what a reader never took is dropped, not sent
    const n = events.length;
    this.pending += n;
    w.writeTo(this.stream, (err) => {
      if (this.abandoned) return;
      this.pending -= n;
      if (err) this.counters.dropped += n;
      else this.counters.sent += n;
      if (this.pending === 0) this.settled?.();
    });
  }

  /** Resolves once everything written has left the process, or after closeTimeoutMs with the rest counted as dropped. */
  async close(): Promise<void> {
    // until everything written has left the process, or the reader has gone
    // away (EPIPE fails the pending writes), or closeTimeoutMs has passed
    if (this.pending > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.settled = resolve;
        timer = setTimeout(resolve, this.closeTimeoutMs);
      });
      clearTimeout(timer);
    }
    if (this.pending > 0) {
      this.log?.warn(`stdout: the reader did not take the last ${this.pending} events within ${this.closeTimeoutMs / 1000} s; counted as dropped`);
      this.counters.dropped += this.pending;
      this.pending = 0;
      this.abandoned = true;
      return;
    }
    // stdout itself stays open; a stream of our own is ended
    if (this.broken || this.stream instanceof FdStream || this.stream === process.stdout) return;
    const s = this.stream;
    await new Promise<void>((resolve) => s.end(resolve));
  }

  /** queueDepth: events written to the stream that have not left the process yet */
  stats(): SinkStats {
    return { ...this.counters, queueDepth: this.pending };
  }
}
