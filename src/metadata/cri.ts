/**
 * The Kubernetes CRI client: container and pod-sandbox metadata from
 * containerd's CRI plugin, CRI-O or any other CRI runtime, over gRPC on its
 * unix socket. Speaks runtime.v1 and falls back to runtime.v1alpha2 for
 * runtimes that predate v1 (same wire format for every call used here).
 */
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import {
  RuntimeUnavailableError,
  containerName,
  podFromLabels,
  type ContainerInfo,
  type PodRuntimeClient,
  type PodSandbox,
  type RuntimeName,
} from './container.js';

import { DEFAULT_CRI_SOCKETS } from './container.js';
export { DEFAULT_CRI_SOCKETS };

export type CriApiVersion = 'v1' | 'v1alpha2';
export type CriService = 'RuntimeService' | 'ImageService';

export interface CriClientOptions {
  /** the runtime's unix socket, e.g. /run/containerd/containerd.sock */
  socket: string;
  /** deadline of every call, and of one listPodSandboxes() as a whole (default 2000) */
  timeoutMs?: number;
}

// Response shapes as proto-loader decodes them (camelCase, enums and int64
// as strings, unset messages null, unset scalars their zero value).

export interface CriVersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface CriImageSpec {
  image: string;
  annotations: Record<string, string>;
}

export interface CriContainerStatus {
  id: string;
  metadata: { name: string; attempt: number } | null;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  createdAt: string;
  image: CriImageSpec | null;
  imageRef: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface CriContainerStatusResponse {
  status: CriContainerStatus | null;
  /** verbose only: JSON strings (containerd: "info" with pid, sandboxID, runtimeSpec) */
  info: Record<string, string>;
}

export interface CriPodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}

export interface CriPodSandbox {
  id: string;
  metadata: CriPodSandboxMetadata | null;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  createdAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface CriListPodSandboxResponse {
  items: CriPodSandbox[];
}

export interface CriPodSandboxStatus extends CriPodSandbox {
  network: { ip: string; additionalIps: { ip: string }[] } | null;
}

export interface CriPodSandboxStatusResponse {
  status: CriPodSandboxStatus | null;
  info: Record<string, string>;
}

const PROTO_FILE = fileURLToPath(new URL('../../../proto/cri-api-v1.proto', import.meta.url));
const V1_PREFIX = '/runtime.v1.';
const DEFAULT_TIMEOUT_MS = 2000;

let v1Services: Record<CriService, grpc.ServiceClientConstructor> | undefined;
const constructors = new Map<string, grpc.ServiceClientConstructor>();

function loadV1(): Record<CriService, grpc.ServiceClientConstructor> {
  if (!v1Services) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      keepCase: false,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const v1 = (grpc.loadPackageDefinition(definition).runtime as grpc.GrpcObject).v1 as grpc.GrpcObject;
    v1Services = {
      RuntimeService: v1.RuntimeService as grpc.ServiceClientConstructor,
      ImageService: v1.ImageService as grpc.ServiceClientConstructor,
    };
  }
  return v1Services;
}

/**
 * The gRPC service definition of a CRI service in either API version.
 * v1alpha2 is v1 with the method paths renamed: the messages used here are
 * identical on the wire, and message names never travel.
 */
export function criServiceDefinition(service: CriService, api: CriApiVersion = 'v1'): grpc.ServiceDefinition {
  return criClientConstructor(service, api).service;
}

function criClientConstructor(service: CriService, api: CriApiVersion): grpc.ServiceClientConstructor {
  const v1 = loadV1()[service];
  if (api === 'v1') return v1;
  const key = `${service}/${api}`;
  let ctor = constructors.get(key);
  if (!ctor) {
    const methods: grpc.ServiceDefinition = Object.fromEntries(
      Object.entries(v1.service).map(([name, method]) => [name, { ...method, path: method.path.replace(V1_PREFIX, `/runtime.${api}.`) }]),
    );
    ctor = grpc.makeClientConstructor(methods, `runtime.${api}.${service}`);
    constructors.set(key, ctor);
  }
  return ctor;
}

/** A raw gRPC client for one CRI service on a unix socket (for CriClient and the tests' harness). */
export function criGrpcClient(socket: string, service: CriService, api: CriApiVersion = 'v1'): grpc.Client {
  const Ctor = criClientConstructor(service, api);
  return new Ctor(`unix://${socket}`, grpc.credentials.createInsecure());
}

type UnaryMethod = (
  request: object,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;

/** One unary call with an absolute deadline (ms since the epoch). */
export function criCall<T>(client: grpc.Client, method: string, request: object, deadline: number): Promise<T> {
  const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
  if (typeof fn !== 'function') return Promise.reject(new TypeError(`no CRI method ${method}`));
  return new Promise((resolve, reject) => {
    fn.call(client, request, { deadline }, (error, response) => (error ? reject(error) : resolve(response as T)));
  });
}

function grpcCode(error: unknown): grpc.status | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

function describeError(error: unknown): string {
  const code = grpcCode(error);
  if (code === undefined) return error instanceof Error ? error.message : String(error);
  const details = (error as grpc.ServiceError).details || (error as Error).message;
  return `${grpc.status[code] ?? code}: ${details}`;
}

/** Which runtime answers, from VersionResponse.runtime_name. */
function runtimeFromName(name: string): RuntimeName {
  if (/containerd/i.test(name)) return 'containerd';
  if (/cri-?o/i.test(name)) return 'cri-o';
  return 'cri';
}

/**
 * Container and pod-sandbox metadata from a CRI runtime. Every call carries
 * a deadline of `timeoutMs`; failures other than "not found" become
 * RuntimeUnavailableError.
 */
export class CriClient implements PodRuntimeClient {
  readonly endpoint: string;
  private readonly timeoutMs: number;
  private currentRuntime: RuntimeName = 'cri';
  private currentApi: CriApiVersion = 'v1';
  private client: grpc.Client;
  private version: CriVersionResponse | undefined;

  /** Opens a channel for runtime.v1 without asking anything; connect() also checks the runtime answers. */
  constructor(options: CriClientOptions) {
    if (typeof options.socket !== 'string' || options.socket === '') throw new TypeError('CRI socket must be a non-empty path');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new RangeError(`CRI timeoutMs must be a positive number, got ${timeoutMs}`);
    this.endpoint = options.socket;
    this.timeoutMs = timeoutMs;
    this.client = criGrpcClient(options.socket, 'RuntimeService', 'v1');
  }

  /**
   * A client for the CRI runtime on `socket`, after one Version call: v1 if
   * the runtime serves it, else v1alpha2. Rejects with RuntimeUnavailableError
   * when nothing answers, or nothing answers CRI, within the timeout.
   */
  static async connect(socket: string, options: Omit<CriClientOptions, 'socket'> = {}): Promise<CriClient> {
    const client = new CriClient({ ...options, socket });
    try {
      await client.negotiate();
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  get runtime(): RuntimeName {
    return this.currentRuntime;
  }

  /** What Version() answered, after connect(). */
  get versionInfo(): CriVersionResponse | undefined {
    return this.version;
  }

  /** The CRI API version in use. */
  get apiVersion(): CriApiVersion {
    return this.currentApi;
  }

  private async negotiate(): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    let version: CriVersionResponse;
    try {
      version = await criCall<CriVersionResponse>(this.client, 'Version', { version: 'v1' }, deadline);
    } catch (error) {
      // a runtime without runtime.v1 answers UNIMPLEMENTED (unknown service)
      if (grpcCode(error) !== grpc.status.UNIMPLEMENTED) throw this.unavailable(error);
      this.client.close();
      this.client = criGrpcClient(this.endpoint, 'RuntimeService', 'v1alpha2');
      this.currentApi = 'v1alpha2';
      try {
        version = await criCall<CriVersionResponse>(this.client, 'Version', { version: 'v1alpha2' }, deadline);
      } catch (error2) {
        if (grpcCode(error2) === grpc.status.UNIMPLEMENTED) {
          throw new RuntimeUnavailableError('cri', `${this.endpoint} does not serve the CRI (neither runtime.v1 nor runtime.v1alpha2)`);
        }
        throw this.unavailable(error2);
      }
    }
    this.version = version;
    this.currentRuntime = runtimeFromName(version.runtimeName);
  }

  async inspect(id: string): Promise<ContainerInfo | null> {
    let response: CriContainerStatusResponse;
    try {
      response = await this.call<CriContainerStatusResponse>('ContainerStatus', { containerId: id, verbose: false });
    } catch (error) {
      if (grpcCode(error) === grpc.status.NOT_FOUND) return null;
      throw this.unavailable(error);
    }
    const status = response.status;
    if (!status) return null;
    const labels = { ...status.labels };
    const info: ContainerInfo = {
      id: status.id || id,
      name: containerName(status.metadata?.name ?? '', labels),
      // the image as created (containerd reports the image's first tag)
      image: status.image?.image || status.imageRef,
      runtime: this.currentRuntime,
      labels,
    };
    const pod = podFromLabels(labels);
    if (pod) info.pod = pod;
    return info;
  }

  /** The READY pod sandboxes with their IPs; the whole listing within one timeout. */
  async listPodSandboxes(): Promise<PodSandbox[]> {
    const deadline = Date.now() + this.timeoutMs;
    let list: CriListPodSandboxResponse;
    try {
      list = await this.call<CriListPodSandboxResponse>('ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } }, deadline);
    } catch (error) {
      throw this.unavailable(error);
    }
    const pods = await Promise.all(
      list.items.map(async (item): Promise<PodSandbox | null> => {
        let status: CriPodSandboxStatus | null;
        try {
          status = (await this.call<CriPodSandboxStatusResponse>('PodSandboxStatus', { podSandboxId: item.id }, deadline)).status;
        } catch (error) {
          // removed between the list and the status
          if (grpcCode(error) === grpc.status.NOT_FOUND) return null;
          throw this.unavailable(error);
        }
        const meta = status?.metadata ?? item.metadata;
        const network = status?.network;
        const ips = network ? [network.ip, ...network.additionalIps.map((a) => a.ip)].filter((ip) => ip !== '') : [];
        return { id: item.id, name: meta?.name ?? '', namespace: meta?.namespace ?? '', uid: meta?.uid ?? '', ips };
      }),
    );
    return pods.filter((p): p is PodSandbox => p !== null);
  }

  close(): void {
    this.client.close();
  }

  private call<T>(method: string, request: object, deadline = Date.now() + this.timeoutMs): Promise<T> {
    return criCall<T>(this.client, method, request, deadline);
  }

  private unavailable(error: unknown): RuntimeUnavailableError {
    return new RuntimeUnavailableError(this.currentRuntime, `CRI runtime at ${this.endpoint}: ${describeError(error)}`);
  }
}

/**
 * The first of `candidates` that is a unix socket answering CRI Version
 * (a containerd with its CRI plugin disabled, as Docker ships it, does not).
 */
export async function detectCriSocket(
  candidates: readonly string[] = DEFAULT_CRI_SOCKETS,
  options: Omit<CriClientOptions, 'socket'> = {},
): Promise<string | undefined> {
  for (const path of candidates) {
    try {
      if (!(await stat(path)).isSocket()) continue;
    } catch {
      continue;
    }
    try {
      (await CriClient.connect(path, options)).close();
      return path;
    } catch {
      // not a CRI runtime, or not answering: try the next one
    }
  }
  return undefined;
}
