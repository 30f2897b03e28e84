/**
 * The shape every metrics consumer reads: families of samples, as the
 * Prometheus data model has them. The one registry (src/aggregate/registry.ts)
 * produces them; the /metrics endpoint renders them as text and remote write
 * encodes them as protobuf, so both always agree.
 */

export type MetricType = 'counter' | 'gauge';

export interface MetricSample {
  /** label name -> value; never includes __name__ */
  labels: Readonly<Record<string, string>>;
  value: number;
}

export interface MetricFamily {
  /** e.g. convis_tcp_bytes_sent_total (counters end in _total) */
  name: string;
  help: string;
  type: MetricType;
  samples: MetricSample[];
}

export interface MetricsSource {
  /** A consistent snapshot of every family, taken now. */
  collect(): MetricFamily[];
}
