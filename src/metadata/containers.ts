/**
 * Container and pod facts for connection events. Container ids come from
 * cgroup paths (the process's, else the socket's cgroup v2 id); names,
 * images and pods come from the runtimes' APIs through a cache, so each
 * container is asked about once. Lookups are asynchronous: the pipeline
 * awaits the few that a batch needs (bounded in time) before it emits.
 */
import type { Logger } from '../util/log.js';
import type { CgroupIndex } from './cgroup-index.js';
import { containerFromPath, type ContainerRef } from './cgroup.js';
import { RuntimeUnavailableError, type ContainerInfo, type PodRuntimeClient, type PodSandbox, type RuntimeClient } from './container.js';

export interface ContainersOptions {
  /** asked in this order, after those matching the cgroup path's runtime */
  runtimes: RuntimeClient[];
  /** the CRI runtime, for pod IPs on this node */
  pods?: PodRuntimeClient;
  /** cgroup v2 id -> path, for sockets whose process is gone or unknown */
  cgroups?: CgroupIndex;
  log: Logger;
  /** longest a batch waits for lookups (default 3000 ms) */
  waitMs?: number;
  /** a runtime that failed is not asked again for this long (default 30 s) */
  downForMs?: number;
  /** an id no runtime knows is not asked about again for this long (default 60 s) */
  unknownForMs?: number;
  /** pod IPs are re-read at least this often (default 10 s) */
  podRefreshMs?: number;
  /** containers remembered, including exited ones (default 4096); the least recently used go first */
  maxContainers?: number;
  /** ids no runtime knew, remembered so they are not asked about again (default 4096); the oldest go first */
  maxUnknown?: number;
  now?: () => number;
}

export interface ContainersStats {
  /** runtime API calls made */
  lookups: number;
  /** ids no runtime knew */
  unknown: number;
  /** calls that failed because a runtime was down or absent */
  runtimeErrors: number;
  /** batches emitted before their lookups finished (waitMs passed) */
  lateBatches: number;
  cached: number;
  /** containers forgotten because maxContainers were remembered */
  evicted: number;
  /** ids no runtime knew, held so as not to ask again */
  unknownCached: number;
  /** such ids forgotten early because maxUnknown were held (they may be asked about again) */
  unknownEvicted: number;
  podIps: number;
}

export class Containers {
  private readonly o: Required<Omit<ContainersOptions, 'pods' | 'cgroups'>> & Pick<ContainersOptions, 'pods' | 'cgroups'>;
  private readonly info = new Map<string, ContainerInfo>();
  private readonly unknownUntil = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly downUntil = new Map<RuntimeClient, number>();
  private podsByIp = new Map<string, PodSandbox>();
  private podsReadAt = -Infinity;
  private podsReading: Promise<void> | undefined;
  private readonly counters = { lookups: 0, unknown: 0, runtimeErrors: 0, lateBatches: 0, evicted: 0, unknownEvicted: 0 };

  constructor(options: ContainersOptions) {
    this.o = {
      waitMs: 3000,
      downForMs: 30_000,
      unknownForMs: 60_000,
      podRefreshMs: 10_000,
      maxContainers: 4096,
      maxUnknown: 4096,
      now: Date.now,
      ...options,
    };
  }

  /** The container of a socket's cgroup v2 id, from the index (undefined: not known yet or none). */
  refOfCgroup(cgroupId: number): ContainerRef | undefined {
    const path = this.o.cgroups?.get(cgroupId);
    return path === undefined ? undefined : containerFromPath(path);
  }

  /** Whether walking the cgroup hierarchy might still find this id. */
  mayFindCgroup(cgroupId: number): boolean {
    return this.o.cgroups?.isWorthLookingFor(cgroupId) ?? false;
  }

  /** Cached facts for a container id, or undefined. */
  get(id: string): ContainerInfo | undefined {
    const c = this.info.get(id);
    if (c) {
      // most recently used last: eviction takes the first
      this.info.delete(id);
      this.info.set(id, c);
    }
    return c;
  }

  /** The pod on this node that has this IP, if the CRI runtime said so. */
  podByIp(ip: string): PodSandbox | undefined {
    return this.podsByIp.get(ip);
  }

  /** Whether resolve() has anything to do for these refs and unknown cgroup ids. */
  needs(refs: Iterable<ContainerRef>, unknownCgroups: ReadonlySet<number>): boolean {
    if (unknownCgroups.size > 0) return true;
    for (const r of refs) if (this.wants(r)) return true;
    return this.podsStale();
  }

  /**
   * Looks up what the refs need, and walks the cgroup hierarchy for socket
   * cgroup ids it does not know, then looks up the containers those name;
   * waits at most waitMs. Never rejects.
   */
  async resolve(refs: Iterable<ContainerRef>, unknownCgroups: ReadonlySet<number>): Promise<void> {
    const work = this.work(refs, unknownCgroups);
    if (work.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((res) => (timer = setTimeout(() => res('late'), this.o.waitMs)));
    const done = await Promise.race([Promise.all(work).then(() => 'done' as const), late]);
    clearTimeout(timer);
    if (done === 'late') this.counters.lateBatches++;
  }

  /** Finds these cgroups and looks up their containers in the background. */
  prefetch(cgroupIds: ReadonlySet<number>): void {
    void Promise.all(this.work([], cgroupIds));
  }

  /** The lookups (each never rejects) that refs and unknown cgroup ids call for. */
  private work(refs: Iterable<ContainerRef>, unknownCgroups: ReadonlySet<number>): Promise<void>[] {
    const work: Promise<void>[] = [];
    const cgroups = this.o.cgroups;
    if (cgroups && unknownCgroups.size > 0) {
      work.push(
        cgroups.find(unknownCgroups).then(async () => {
          const found = [...unknownCgroups].map((id) => this.refOfCgroup(id)).filter((r): r is ContainerRef => r !== undefined);
          await Promise.all(found.filter((r) => this.wants(r)).map((r) => this.lookup(r)));
        }),
      );
    }
    for (const r of refs) if (this.wants(r)) work.push(this.lookup(r));
    if (this.podsStale()) work.push(this.readPods());
    return work;
  }

  stats(): ContainersStats {
    return { ...this.counters, cached: this.info.size, unknownCached: this.unknownUntil.size, podIps: this.podsByIp.size };
  }

  private wants(r: ContainerRef): boolean {
    if (this.inflight.has(r.id)) return true;
    if (this.info.has(r.id)) return false;
    const until = this.unknownUntil.get(r.id);
    return until === undefined || this.o.now() >= until;
  }

  private podsStale(): boolean {
    return this.o.pods !== undefined && !this.isDown(this.o.pods) && this.o.now() - this.podsReadAt >= this.o.podRefreshMs;
  }

  private lookup(r: ContainerRef): Promise<void> {
    let p = this.inflight.get(r.id);
    if (!p) {
      p = this.ask(r).finally(() => this.inflight.delete(r.id));
      this.inflight.set(r.id, p);
    }
    return p;
  }

  /** Runtimes matching the path's runtime first, then the rest. */
  private order(r: ContainerRef): RuntimeClient[] {
    const cri = ['containerd', 'cri-o', 'cri'];
    const matches = (c: RuntimeClient) =>
      c.runtime === r.runtime || (cri.includes(r.runtime) && cri.includes(c.runtime));
    return [...this.o.runtimes.filter(matches), ...this.o.runtimes.filter((c) => !matches(c))];
  }

  private async ask(r: ContainerRef): Promise<void> {
    for (const client of this.order(r)) {
      if (this.isDown(client)) continue;
      this.counters.lookups++;
      try {
        const found = await client.inspect(r.id);
        this.markUp(client);
        if (found) {
          this.remember(found);
          // a new pod container: its pod's IP is worth knowing now
          if (found.pod && this.o.pods) {
            this.podsReadAt = -Infinity;
            await this.readPods();
          }
          return;
        }
      } catch (e) {
        this.markDown(client, e);
      }
    }
    this.counters.unknown++;
    // re-set at the end, so the oldest entry is always the first
    this.unknownUntil.delete(r.id);
    this.unknownUntil.set(r.id, this.o.now() + this.o.unknownForMs);
    while (this.unknownUntil.size > this.o.maxUnknown) {
      const oldest = this.unknownUntil.keys().next().value as string;
      this.unknownUntil.delete(oldest);
      this.counters.unknownEvicted++;
    }
  }

  private async readPods(): Promise<void> {
    const pods = this.o.pods;
    if (!pods) return;
    this.podsReading ??= (async () => {
      try {
        const list = await pods.listPodSandboxes();
        this.markUp(pods);
        const byIp = new Map<string, PodSandbox>();
        for (const p of list) for (const ip of p.ips) byIp.set(ip, p);
        this.podsByIp = byIp;
      } catch (e) {
        this.markDown(pods, e);
      } finally {
        this.podsReadAt = this.o.now();
        this.podsReading = undefined;
      }
    })();
    return this.podsReading;
  }

  private remember(c: ContainerInfo): void {
    this.info.delete(c.id);
    this.info.set(c.id, c);
    this.unknownUntil.delete(c.id);
    if (this.info.size > this.o.maxContainers) {
      const oldest = this.info.keys().next().value;
      if (oldest !== undefined) this.info.delete(oldest);
      this.counters.evicted++;
    }
  }

  private isDown(c: RuntimeClient): boolean {
    const until = this.downUntil.get(c);
    return until !== undefined && this.o.now() < until;
  }

  private markUp(c: RuntimeClient): void {
    if (this.downUntil.delete(c)) this.o.log.info(`${c.runtime} at ${c.endpoint} answers again`);
  }

  private markDown(c: RuntimeClient, e: unknown): void {
    this.counters.runtimeErrors++;
    const wasDown = this.downUntil.has(c);
    this.downUntil.set(c, this.o.now() + this.o.downForMs);
    // one line per runtime, not per failed call
    if (!wasDown) {
      const why = e instanceof RuntimeUnavailableError ? e.message : String(e);
      this.o.log.warn(`${c.runtime} at ${c.endpoint} is unavailable (${why}); containers it runs are named by id only until it answers`);
    }
  }
}
