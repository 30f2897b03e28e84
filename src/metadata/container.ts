/**
 * What convis knows about a container, and the contract every container
 * runtime client (Docker Engine API, podman's Docker-compatible API, CRI)
 * implements.
 */

export type RuntimeName = 'docker' | 'podman' | 'containerd' | 'cri-o' | 'cri';

export interface PodRef {
  name: string;
  namespace: string;
  uid: string;
}

export interface ContainerInfo {
  /** the full 64-hex container id */
  id: string;
  /** the container's name: the Kubernetes container name when labelled, else the runtime's (no leading '/') */
  name: string;
  /** the image reference as the container was created with it (e.g. "nginx:1.27") */
  image: string;
  /** which runtime answered */
  runtime: RuntimeName;
  labels: Record<string, string>;
  /** from the io.kubernetes.pod.{name,namespace,uid} labels, when present */
  pod?: PodRef;
}

/** A pod sandbox on this node with its IPs (CRI PodSandboxStatus). */
export interface PodSandbox {
  id: string;
  name: string;
  namespace: string;
  uid: string;
  ips: string[];
}

/** The error a runtime client throws when its daemon cannot be reached or answers badly. */
export class RuntimeUnavailableError extends Error {
  readonly code = 'ERUNTIME';
  readonly runtime: RuntimeName;
  constructor(runtime: RuntimeName, message: string) {
    super(message);
    this.name = 'RuntimeUnavailableError';
    this.runtime = runtime;
  }
}

export interface RuntimeClient {
  readonly runtime: RuntimeName;
  /** where it talks to, for logs (a socket path or URL without credentials) */
  readonly endpoint: string;
  /**
   * The container with this full id, or null when this runtime does not know
   * it. Throws RuntimeUnavailableError when the runtime cannot be asked.
   * Never takes longer than the client's timeout.
   */
  inspect(id: string): Promise<ContainerInfo | null>;
  /** Releases sockets and channels. */
  close(): void;
}

/** A runtime that also knows pod sandboxes and their IPs (CRI). */
export interface PodRuntimeClient extends RuntimeClient {
  listPodSandboxes(): Promise<PodSandbox[]>;
}

const POD_NAME = 'io.kubernetes.pod.name';
const POD_NAMESPACE = 'io.kubernetes.pod.namespace';
const POD_UID = 'io.kubernetes.pod.uid';
const CONTAINER_NAME = 'io.kubernetes.container.name';

/** Pod identity from a container's Kubernetes labels, if it has them. */
export function podFromLabels(labels: Record<string, string>): PodRef | undefined {
  const name = labels[POD_NAME];
  const namespace = labels[POD_NAMESPACE];
  if (!name || !namespace) return undefined;
  return { name, namespace, uid: labels[POD_UID] ?? '' };
}

/** The Kubernetes container name when labelled, else the runtime's name. */
export function containerName(runtimeName: string, labels: Record<string, string>): string {
  return labels[CONTAINER_NAME] || runtimeName.replace(/^\//, '');
}

/** Where CRI runtimes listen by default: containerd, CRI-O, k3s. */
export const DEFAULT_CRI_SOCKETS: readonly string[] = [
  '/run/containerd/containerd.sock',
  '/var/run/containerd/containerd.sock',
  '/run/crio/crio.sock',
  '/var/run/crio/crio.sock',
  '/run/k3s/containerd/containerd.sock',
];
