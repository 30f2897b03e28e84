/**
 * How convis is deployed, as the README documents it: the image, the
 * capabilities, the mounts, the port and the probe paths. The container
 * tests run the image with exactly these; the manifest test checks that
 * deploy/kubernetes uses the same.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REQUIRED_CAPABILITIES } from '../../src/tracer/preflight.js';
import { repoRoot } from './paths.js';

const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

export const IMAGE = `localhost/convis:${version}`;
export const IMAGE_LATEST = 'localhost/convis:latest';
/** as --cap-add and Kubernetes take them: without CAP_ */
export const CAPABILITIES = REQUIRED_CAPABILITIES.map((c) => c.name.replace(/^CAP_/, ''));
export const METRICS_PORT = 9400;
export const LIVENESS_PATH = '/healthz';
export const READINESS_PATH = '/readyz';

export interface Mount {
  /** the path on the node (tests replace the runtime sockets with their private daemons') */
  host: string;
  /** the path in the container */
  path: string;
  readOnly: boolean;
}

/** The mounts the README lists, each read-only. */
export const MOUNTS: readonly Mount[] = [
  // tracefs: libbpf reads tracepoint ids there (the container's own /sys has the kernel's BTF)
  { host: '/sys/kernel/tracing', path: '/sys/kernel/tracing', readOnly: true },
  // the whole cgroup hierarchy (the container's own shows only its cgroup): the attach point, the container index
  { host: '/sys/fs/cgroup', path: '/sys/fs/cgroup', readOnly: true },
  { host: '/var/run/docker.sock', path: '/var/run/docker.sock', readOnly: true },
  { host: '/run/podman/podman.sock', path: '/run/podman/podman.sock', readOnly: true },
  { host: '/run/containerd/containerd.sock', path: '/run/containerd/containerd.sock', readOnly: true },
];
