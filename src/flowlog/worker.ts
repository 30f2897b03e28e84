/**
 * The flow log's writer thread (started by the flowlog sink, sink.ts): all
 * SQLite work happens here, off the agent's main thread, so a slow disk
 * delays the flow log only, never the kernel side or the other sinks.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { FromWriter, ToWriter, WriterOptions } from './record.js';
import { FlowLogWriter } from './writer.js';

const port = parentPort;
if (port === null) throw new Error('flowlog: worker.js runs as a worker thread only');
const post = (m: FromWriter, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

let writer: FlowLogWriter | undefined;
try {
  writer = new FlowLogWriter(workerData as WriterOptions, post);
} catch (e) {
  // the sink ends this thread once it has read the line
  post({ type: 'error', message: (e as Error).message.split('\n')[0] ?? '' });
}
if (writer !== undefined) {
  const w = writer;
  // a bug or an error no write expects: one line to the sink, which stops
  // the flow log (an uncaught error would lose its message on the way)
  process.on('uncaughtException', (e) => {
    post({ type: 'failed', message: (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '' });
    w.abandon();
  });
  port.on('message', (m: ToWriter) => w.receive(m));
  post({ type: 'ready' });
}
