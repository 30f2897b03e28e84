/**
 * Prometheus remote write 1.0 wire format: a snapshot of metric families
 * as a snappy-compressed protobuf WriteRequest, one TimeSeries per sample.
 *
 * Libraries, and why:
 * - protobufjs builds the four message types at load time from the
 *   prompb definitions below (field numbers as in prometheus/prompb
 *   remote.proto and types.proto), so the numbers sit next to the spec
 *   they come from, with no generated code and no .proto file to ship.
 *   It is already in the tree (@grpc/proto-loader uses it for CRI).
 * - snappyjs is Snappy's block format (what remote write requires; the
 *   framed/stream format is rejected) in plain JavaScript: no native binary
 *   to build or download per platform. Speed is not a reason for native
 *   code here: a request of 2000 series with 8 labels each (~400 KB of
 *   protobuf, ~45 KB compressed) takes ~14 ms to encode and ~2 ms to
 *   compress, once per request per interval.
 *
 * Only what the 1.0 spec has is sent: labels and samples. Metadata (help,
 * type) is not part of it (field 3 is reserved there), so it is left out.
 */
import protobuf from 'protobufjs';
import snappy from 'snappyjs';

import type { MetricFamily } from '../../aggregate/metrics.js';

const PROMPB = `
syntax = "proto3";
package prometheus;

message WriteRequest {
  repeated TimeSeries timeseries = 1;
  reserved 2, 3;
}
message TimeSeries {
  // sorted by name, names unique
  repeated Label labels = 1;
  // in timestamp order
  repeated Sample samples = 2;
}
message Label {
  string name = 1;
  string value = 2;
}
message Sample {
  double value = 1;
  // milliseconds since the Unix epoch
  int64 timestamp = 2;
}
`;

const WriteRequest = protobuf.parse(PROMPB, { keepCase: true }).root.lookupType('prometheus.WriteRequest');

/** Series per request unless told otherwise (Prometheus itself sends up to 2000 samples per request). */
export const DEFAULT_MAX_SERIES_PER_REQUEST = 2000;

interface Label {
  name: string;
  value: string;
}

/** Label names sort as Go compares strings (bytes); names are ASCII, so UTF-16 order is the same. */
const byName = (a: Label, b: Label) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Samples (= series, one sample each) in these families. */
export function countSamples(families: readonly MetricFamily[]): number {
  let n = 0;
  for (const f of families) n += f.samples.length;
  return n;
}

/**
 * The uncompressed protobuf WriteRequest: one TimeSeries per sample with
 * __name__ and the sample's labels, sorted by name, empty values left out
 * (Prometheus treats an empty label as an absent one), and one Sample at
 * timestampMs.
 */
export function encodeWriteRequestProto(families: readonly MetricFamily[], timestampMs: number): Uint8Array {
  const timeseries: { labels: Label[]; samples: { value: number; timestamp: number }[] }[] = [];
  const ts = Math.trunc(timestampMs);
  for (const f of families) {
    for (const s of f.samples) {
      const labels: Label[] = [{ name: '__name__', value: f.name }];
      for (const name in s.labels) {
        const value = s.labels[name];
        if (value === undefined || value === '' || name === '__name__') continue;
        labels.push({ name, value });
      }
      labels.sort(byName);
      timeseries.push({ labels, samples: [{ value: s.value, timestamp: ts }] });
    }
  }
  return WriteRequest.encode({ timeseries }).finish();
}

/** The request body remote write POSTs: encodeWriteRequestProto, snappy block format. */
export function encodeWriteRequest(families: MetricFamily[], timestampMs: number): Buffer {
  const proto = encodeWriteRequestProto(families, timestampMs);
  return snappy.compress(Buffer.from(proto.buffer, proto.byteOffset, proto.byteLength));
}

/**
 * Splits a snapshot into batches of at most maxSeriesPerRequest samples
 * each, in order; a family larger than that is cut into parts (each part
 * keeps name, help and type). Families without samples are left out, so
 * an empty snapshot gives no batch at all.
 */
export function splitFamilies(families: readonly MetricFamily[], maxSeriesPerRequest = DEFAULT_MAX_SERIES_PER_REQUEST): MetricFamily[][] {
  if (!Number.isInteger(maxSeriesPerRequest) || maxSeriesPerRequest < 1) {
    throw new RangeError(`maxSeriesPerRequest must be a positive integer, not ${maxSeriesPerRequest}`);
  }
  const batches: MetricFamily[][] = [];
  let batch: MetricFamily[] = [];
  let room = maxSeriesPerRequest;
  for (const f of families) {
    let offset = 0;
    while (offset < f.samples.length) {
      const take = Math.min(room, f.samples.length - offset);
      const samples = offset === 0 && take === f.samples.length ? f.samples : f.samples.slice(offset, offset + take);
      batch.push({ ...f, samples });
      offset += take;
      room -= take;
      if (room === 0) {
        batches.push(batch);
        batch = [];
        room = maxSeriesPerRequest;
      }
    }
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
