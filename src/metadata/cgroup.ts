/**
 * Container identity from cgroup paths: ONE table of patterns for every
 * runtime and cgroup driver, applied to /proc/<pid>/cgroup lines (v1, v2,
 * hybrid) or to a cgroup v2 path found from a socket's cgroup id.
 */
import type { RuntimeName } from './container.js';

export interface ContainerRef {
  /** the full 64-hex container id */
  id: string;
  /** the runtime the path names, or 'cri' when only Kubernetes' layout says it is a CRI container */
  runtime: RuntimeName;
  /** the pod uid, when the path is a kubelet's pod cgroup */
  podUid?: string;
}

const ID = '([0-9a-f]{64})';

/**
 * One cgroup path component that names a container. Checked leaf first, so
 * the innermost container wins (a container's own sub-cgroups such as
 * init.scope sit below it and match nothing).
 */
const COMPONENT_PATTERNS: { re: RegExp; runtime: RuntimeName }[] = [
  // Docker, systemd driver: /system.slice/docker-<id>.scope
  { re: new RegExp(`^docker-${ID}\\.scope$`), runtime: 'docker' },
  // containerd CRI, systemd driver: .../cri-containerd-<id>.scope
  { re: new RegExp(`^cri-containerd-${ID}\\.scope$`), runtime: 'containerd' },
  // CRI-O: crio-<id>.scope (systemd) or crio-<id> (cgroupfs)
  { re: new RegExp(`^crio-${ID}(?:\\.scope)?$`), runtime: 'cri-o' },
  // podman: libpod-<id>.scope (systemd) or libpod-<id> under libpod_parent (cgroupfs)
  { re: new RegExp(`^libpod-${ID}(?:\\.scope)?$`), runtime: 'podman' },
  // a bare id: the parent decides whose it is (see BARE_ID_PARENTS)
  { re: new RegExp(`^${ID}$`), runtime: 'cri' },
];

/** For a bare 64-hex component: what its parent component says about the runtime. */
const BARE_ID_PARENTS: { re: RegExp; runtime: RuntimeName }[] = [
  { re: /^docker$/, runtime: 'docker' }, // cgroupfs driver: /docker/<id>
  { re: /^k8s\.io$/, runtime: 'containerd' }, // containerd namespace k8s.io, cgroupfs: /k8s.io/<id>
  { re: /^libpod_parent$/, runtime: 'podman' },
  { re: /^pod[0-9a-f_-]+$/, runtime: 'cri' }, // kubelet cgroupfs: /kubepods/<qos>/pod<uid>/<id>
];

/**
 * kubelet pod cgroups: pod<uid> (cgroupfs) or kubepods-<qos>-pod<uid_with_underscores>.slice
 * (systemd; a nested kubelet, as in kind, prefixes it with "kubelet-")
 */
const POD_UID = /(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$/;

/** The container a single cgroup path belongs to, or undefined. */
export function containerFromPath(path: string): ContainerRef | undefined {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.' && p !== '..');
  for (let i = parts.length - 1; i >= 0; i--) {
    const part = parts[i] as string;
    for (const { re, runtime } of COMPONENT_PATTERNS) {
      const m = re.exec(part);
      if (!m) continue;
      let rt = runtime;
      if (runtime === 'cri') {
        const parent = parts[i - 1];
        const p = parent === undefined ? undefined : BARE_ID_PARENTS.find((x) => x.re.test(parent));
        // a bare id with no known parent: a container all the same (nested or
        // namespaced layouts), runtime unknown beyond "ask them all"
        rt = p ? p.runtime : 'cri';
      }
      const ref: ContainerRef = { id: m[1] as string, runtime: rt };
      for (let j = i - 1; j >= 0; j--) {
        const pod = POD_UID.exec(parts[j] as string);
        if (pod) {
          ref.podUid = (pod[1] as string).replace(/_/g, '-');
          break;
        }
      }
      return ref;
    }
  }
  return undefined;
}

/**
 * The container of a process from its /proc/<pid>/cgroup text: every line
 * ("hierarchy:controllers:path") is tried, v2 ("0::") first.
 */
export function containerFromProcCgroup(text: string): ContainerRef | undefined {
  const paths: string[] = [];
  for (const line of text.split('\n')) {
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    const path = line.slice(b + 1);
    if (line.startsWith('0::')) paths.unshift(path);
    else paths.push(path);
  }
  for (const p of paths) {
    const ref = containerFromPath(p);
    if (ref) return ref;
  }
  return undefined;
}
