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
  /** an id a walk did not find is not looked for again for this long (default 30 s) */
  missedForMs?: number;
  now?: () => number;
}

export class CgroupIndex {
  readonly root: string;
  /** id -> path relative to the root ("/docker/<id>"); removed cgroups stay until evicted */
  private readonly paths = new Map<number, string>();
  /** ids a walk did not find -> when; they do not cause walks again for a while */
  private readonly missed = new Map<number, number>();
  private readonly maxEntries: number;
  private readonly missedForMs: number;
  private readonly now: () => number;
  private walking: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  refreshes = 0;
  /** entries forgotten to stay within maxEntries (paths and missed ids) */
  evicted = 0;

  constructor(o: CgroupIndexOptions) {
    this.root = o.root;
    this.maxEntries = o.maxEntries ?? 65536;
    this.missedForMs = o.missedForMs ?? 30_000;
    this.now = o.now ?? Date.now;
  }

  get(id: number): string | undefined {
    return this.paths.get(id);
  }

  /** Whether a walk could still find this id: not indexed, and not missed lately. */
  isWorthLookingFor(id: number): boolean {
    if (this.paths.has(id)) return false;
    const at = this.missed.get(id);
    return at === undefined || this.now() - at >= this.missedForMs;
  }

  /**
   * Walks the hierarchy when some of `ids` are worth looking for; ids still
   * missing afterwards are not looked for again for missedForMs.
   */
  async find(ids: Iterable<number>): Promise<void> {
    const wanted = [...ids].filter((id) => this.isWorthLookingFor(id));
    if (wanted.length === 0) return;
    await this.refresh();
    const now = this.now();
    for (const id of wanted) {
      if (this.paths.has(id)) continue;
      this.missed.set(id, now);
      if (this.missed.size > this.maxEntries) {
        const oldest = this.missed.keys().next().value;
        if (oldest !== undefined) this.missed.delete(oldest);
        this.evicted++;
      }
    }
  }

  /**
   * Walks the hierarchy again. A caller arriving during a walk gets the next
   * one (which sees cgroups created meanwhile); callers arriving together
   * share it. Paths of cgroups that are gone are kept: a container that
   * exited a moment ago is still named.
   */
  refresh(): Promise<void> {
    if (!this.walking) {
      this.walking = this.walkOnce().finally(() => (this.walking = undefined));
      return this.walking;
    }
    this.queued ??= this.walking.then(() => {
      this.queued = undefined;
      return this.refresh();
    });
    return this.queued;
  }

  private async walkOnce(): Promise<void> {
    try {
      await this.walk('/');
    } catch {
      // an unreadable hierarchy leaves the index as it was
    }
    this.refreshes++;
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
    this.missed.delete(id);
    this.paths.delete(id);
    this.paths.set(id, path);
    if (this.paths.size > this.maxEntries) {
      const oldest = this.paths.keys().next().value;
      if (oldest !== undefined) this.paths.delete(oldest);
      this.evicted++;
    }
  }
}
