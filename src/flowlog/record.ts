/**
 * What the flowlog sink hands its writer thread (worker.ts): events packed
 * into two typed arrays per batch, transferred rather than copied, with the
 * strings they refer to given small ids and sent once. Only the sink
 * (sink.ts) writes this format and only the writer (writer.ts) reads it.
 */

/** Event kinds, as packed (listen and unlisten make no row and are not sent). */
export const KINDS = ['connect', 'accept', 'update', 'close', 'connect_failed', 'alert'] as const;
export type RowKind = (typeof KINDS)[number];

/** Float64 fields of one event (numbers that may pass 2^32); an absent optional field is NaN. */
export const F = {
  connId: 0,
  /** ms since the Unix epoch */
  timeMs: 1,
  bytesSent: 2,
  bytesReceived: 3,
  datagramsSent: 4,
  datagramsReceived: 5,
  retransmits: 6,
  durationMs: 7,
} as const;
export const F_STRIDE = 8;

/** Uint32 fields of one event; string fields are ids in the batch's string table, 0 for none. */
export const U = {
  /** kind index (3 bits) and the FLAG_ bits */
  kind: 0,
  /** the workload's id (see WorkloadDef) */
  workload: 1,
  localIp: 2,
  localPort: 3,
  /** the remote address as written ('' when there is none) */
  remoteIp: 4,
  remotePort: 5,
  remoteName: 6,
  servicePort: 7,
  remotePod: 8,
  remoteNamespace: 9,
  error: 10,
  rule: 11,
} as const;
export const U_STRIDE = 12;

export const KIND_MASK = 0x7;
export const FLAG_UDP = 1 << 3;
export const FLAG_INBOUND = 1 << 4;
export const FLAG_EXISTING = 1 << 5;
/** the event names its process */
export const FLAG_OWNED = 1 << 6;

/** A workload's values in the workloads table's column order: node, pid, comm, cmd, container id, name, image, pod, namespace. */
export type WorkloadValues = [string, number | null, string | null, string | null, string | null, string | null, string | null, string | null, string | null];

/** A workload id and its values, sent with the first batch that uses the id. */
export interface WorkloadDef {
  id: number;
  values: WorkloadValues;
}

/** Main thread to writer. Resets apply first, then the new workloads and strings, then the events. */
export type ToWriter =
  | {
      type: 'batch';
      /** events in it */
      n: number;
      f64: Float64Array<ArrayBuffer>;
      u32: Uint32Array<ArrayBuffer>;
      /** the arrays are the sink's packing buffers: send them back (with the counts) for reuse */
      giveBack: boolean;
      /** forget every string id and workload id before this batch (the sink's tables reached their bound) */
      resetStrings: boolean;
      resetWorkloads: boolean;
      /** strings new in this batch: their ids follow the last one given (1 after a reset) */
      strings: string[];
      workloads: WorkloadDef[];
    }
  | { type: 'close' };

/** Writer to main thread. Counts are what happened since the previous message. */
export type FromWriter =
  | { type: 'ready' }
  /** the file could not be opened: one line */
  | { type: 'error'; message: string }
  | { type: 'counts'; applied: number; dropped: number; failed: number; openRows: number; rowSlots: number; f64?: Float64Array<ArrayBuffer>; u32?: Uint32Array<ArrayBuffer> }
  | { type: 'warn'; line: string }
  /** the writer stopped on an error it did not expect: one line; it takes nothing more */
  | { type: 'failed'; message: string }
  | { type: 'closed' };

/** What the writer is started with (workerData). */
export interface WriterOptions {
  path: string;
  retainMs: number;
  maxBytes: number;
  /** when the agent started (ms): the connections rows' run */
  run: number;
  /** tests only: while its first Int32 is not 0, the writer waits before it takes each batch (a stalled disk) */
  hold?: SharedArrayBuffer;
  /** tests only: open connections kept in memory (default MAX_OPEN) */
  maxOpen?: number;
  /** tests only: how long the rows in memory must have been mostly free before they shrink (default SHRINK_AFTER_MS) */
  shrinkAfterMs?: number;
}
