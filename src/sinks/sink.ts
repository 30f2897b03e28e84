import type { ConnectionEvent } from '../metadata/event.js';

/**
 * The one sink contract (after pino's transports). write() must not block
 * the capture path for long: a sink that talks to the network owns a
 * bounded queue, retries and counts what it drops. close() flushes.
 */
export interface Sink {
  readonly name: string;
  write(events: readonly ConnectionEvent[]): void;
  close(): Promise<void>;
  stats(): SinkStats;
  /** Network sinks: how long every delivery attempt has failed, in ms (0 while delivery works). */
  failingForMs?(): number;
}

export interface SinkStats {
  /** events (or samples, for metrics sinks) handed on: written, or accepted by the backend */
  sent: number;
  /** events or samples that could not be delivered and will not be retried */
  dropped: number;
  /** requests given up on after a non-retryable error */
  failed?: number;
  /** items waiting in the sink's queue */
  queueDepth?: number;
}
