/**
 * cgroup v2 id -> path. A socket's cgroup id (what the kernel side reports)
 * is the inode number of its cgroup v2 directory; walking the v2 hierarchy
 * maps ids back to paths, from which container ids are parsed. Used when the
 * process behind a connection is gone or unknown.
 */
import { readFileSync } from 'node:fs';
import { opendir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Mount points of cgroup2 filesystems from /proc/<pid>/mountinfo text. */
export function cgroup2MountPoints(mountinfo: string): string[] {
  const out: string[] = [];
  for (const line of mountinfo.split('\n')) {
    // "36 35 0:31 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw"
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(' ')[0];
    if (fstype !== 'cgroup2') continue;
    const mountPoint = line.slice(0, sep).split(' ')[4];
    if (mountPoint) out.push(mountPoint.replace(/\\040/g, ' '));
  }
  return out;
}

/** The cgroup v2 hierarchy's mount point as this process sees it, if any. */
export function findCgroup2Root(procRoot: string): string | undefined {
  try {
    return cgroup2MountPoints(readFileSync(join(procRoot, 'self/mountinfo'), 'utf8'))[0];
  } catch {
    return undefined;
  }
}

export interface CgroupIndexOptions {
  /** the cgroup2 mount point, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified */
  root: string;
  /** most ids remembered, including those of removed cgroups (default 65536) */
  maxEntries?: number;
  /** a refresh is at most this often (default 1000 ms) */
  minRefreshMs?: number;
  now?: () => number;
}

export class CgroupIndex {
  readonly root: string;
  /** id -> path relative to the root ("/docker/<id>"); removed cgroups stay until evicted */
  private readonly paths = new Map<number, string>();
  private readonly maxEntries: number;
  private readonly minRefreshMs: number;
  private readonly now: () => number;
  private refreshing: Promise<void> | undefined;
  private lastRefreshMs = -Infinity;
  refreshes = 0;

  constructor(o: CgroupIndexOptions) {
    this.root = o.root;
    this.maxEntries = o.maxEntries ?? 65536;
    this.minRefreshMs = o.minRefreshMs ?? 1000;
    this.now = o.now ?? Date.now;
  }

  get(id: number): string | undefined {
    return this.paths.get(id);
  }

  /**
   * Walks the hierarchy again (shared by concurrent callers, and not more
   * often than minRefreshMs). Paths of cgroups that are gone are kept: a
   * container that exited a moment ago is still named.
   */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (this.now() - this.lastRefreshMs < this.minRefreshMs) return Promise.resolve();
    this.refreshing = this.walk('/')
      .catch(() => undefined) // an unreadable hierarchy leaves the index as it was
      .finally(() => {
        this.lastRefreshMs = this.now();
        this.refreshes++;
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  private async walk(rel: string): Promise<void> {
    const abs = join(this.root, rel);
    let ino: number;
    try {
      ino = Number((await stat(abs, { bigint: true })).ino);
    } catch {
      return; // removed while walking
    }
    this.remember(ino, rel);
    let dir;
    try {
      dir = await opendir(abs);
    } catch {
      return;
    }
    for await (const entry of dir) {
      if (entry.isDirectory()) await this.walk(rel === '/' ? `/${entry.name}` : `${rel}/${entry.name}`);
    }
  }

  private remember(id: number, path: string): void {
    this.paths.delete(id);
    this.paths.set(id, path);
    if (this.paths.size > this.maxEntries) {
      const oldest = this.paths.keys().next().value;
      if (oldest !== undefined) this.paths.delete(oldest);
    }
  }
}
