/**
 * Process details by pid, fed by the kernel's exec/fork/exit records and by
 * procfs. A process that exits stays for `exitedTtlMs`, so connections that
 * close after their owner is gone (or an owner that connected and exited
 * within a millisecond) are still attributed with its command line.
 */
import { join } from 'node:path';
import { readlinkSync, readFileSync } from 'node:fs';
import type { ExecRecord, TaskRecord } from '../bpf/decode.js';
import { containerFromProcCgroup, type ContainerRef } from './cgroup.js';
import { listPids, parseCmdline, readProcess, type ProcessInfo } from './proc.js';
import { commandLine, type CmdlineMode } from './cmdline.js';
import { secrets } from '../config/secrets.js';

export interface ProcessCacheOptions {
  procRoot: string;
  /** how long an exited process stays known (default 120 s) */
  exitedTtlMs?: number;
  /** the clock gc() is given (default Date.now) */
  now?: () => number;
  /** most entries kept; the oldest exited ones go first (default 65536) */
  maxEntries?: number;
  /** what command lines show (default redacted: common secret-bearing arguments masked) */
  cmdline?: CmdlineMode;
}

export interface ProcessCacheStats {
  size: number;
  /** lookups answered from what the kernel told us or an earlier read */
  hits: number;
  /** lookups that had to read procfs */
  procfsReads: number;
  /** lookups for a process that was gone from procfs too: kernel facts only */
  unresolved: number;
  /** processes forgotten because maxEntries were held */
  evicted: number;
  /** command lines cut to MAX_CMD_CHARS, or left at the kernel's first 512 bytes */
  cmdTruncated: number;
}

/** What the kernel knows about a process when procfs cannot help. */
export interface ProcessHint {
  comm: string;
  ppid: number;
  uid: number;
}

interface Entry {
  info: ProcessInfo;
  exitedAtMs?: number;
  /** from /proc/<pid>/cgroup: null outside containers, undefined when not read (yet) */
  container?: ContainerRef | null;
  /** procfs no longer has the process: do not ask it again */
  gone?: boolean;
}

export class ProcessCache {
  private readonly entries = new Map<number, Entry>();
  /**
   * pids procfs did not have when asked, with when: their other sockets take
   * the kernel's hint without asking again (oldest first)
   */
  private readonly gonePids = new Map<number, number>();
  /** pids of exited processes, oldest exit first (Map keeps insertion order) */
  private readonly exited = new Map<number, number>();
  private readonly procRoot: string;
  private readonly exitedTtlMs: number;
  private readonly now: () => number;
  private readonly maxEntries: number;
  private readonly cmdline: CmdlineMode;
  private readonly counters = { hits: 0, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 };

  constructor(options: ProcessCacheOptions) {
    this.procRoot = options.procRoot;
    this.exitedTtlMs = options.exitedTtlMs ?? 120_000;
    this.maxEntries = options.maxEntries ?? 65536;
    this.now = options.now ?? Date.now;
    this.cmdline = options.cmdline ?? 'redacted';
  }

  /** Loads every running process; call once, after the tracer is attached. */
  scan(): void {
    for (const pid of listPids(this.procRoot)) {
      if (this.entries.has(pid)) continue;
      const info = readProcess(this.procRoot, pid, this.cmdline);
      if (info?.cmdTruncated) this.counters.cmdTruncated++;
      if (info) this.set(pid, { info });
    }
  }

  onExec(r: ExecRecord): void {
    let argv = r.argv;
    let cut = false;
    // argv longer than the kernel copies: the live process has the rest
    if (r.argsTruncated) {
      try {
        argv = parseCmdline(readFileSync(join(this.procRoot, String(r.pid), 'cmdline')));
      } catch {
        // gone already: keep the truncated copy, and say so
        cut = true;
      }
    }
    // the resolved executable while the process lives (as /proc/<pid>/exe
    // shows it); for one already gone, the path it was started with
    let exe = r.filename;
    try {
      exe = readlinkSync(join(this.procRoot, String(r.pid), 'exe'));
    } catch {
      // exited already
    }
    const line = commandLine(argv.length > 0 ? argv : [r.filename], this.cmdline);
    const cmdTruncated = (cut || line.truncated) && this.cmdline !== 'none';
    if (cmdTruncated) this.counters.cmdTruncated++;
    // read now: a process that connects and exits at once is gone by its first
    // event; if it is gone already, exec did not change its cgroups: keep what
    // it inherited at fork
    const container = this.readContainer(r.pid) ?? this.entries.get(r.pid)?.container;
    this.set(r.pid, {
      info: { pid: r.pid, ppid: r.ppid, uid: r.uid, comm: secrets.scrub(r.comm), cmd: line.cmd, ...(cmdTruncated ? { cmdTruncated: true } : {}), exe: secrets.scrub(exe) },
      ...(container !== undefined ? { container } : {}),
    });
  }

  /** A new process (not thread) starts as a copy of its parent. */
  onFork(r: TaskRecord): void {
    const parentEntry = this.entries.get(r.ppid);
    const parent = parentEntry?.info;
    // a child starts in its parent's cgroup
    const container = parentEntry?.container !== undefined ? parentEntry.container : this.readContainer(r.pid);
    this.set(r.pid, {
      ...(container !== undefined ? { container } : {}),
      info: {
        pid: r.pid,
        ppid: r.ppid,
        uid: r.uid,
        comm: secrets.scrub(r.comm),
        cmd: parent?.cmd ?? (this.cmdline === 'none' ? '' : secrets.scrub(r.comm)),
        ...(parent?.cmdTruncated ? { cmdTruncated: true } : {}),
        exe: parent?.exe ?? '',
      },
    });
  }

  onExit(r: TaskRecord, nowMs: number): void {
    const e = this.entries.get(r.pid);
    if (!e) return;
    e.exitedAtMs = nowMs;
    this.exited.delete(r.pid);
    this.exited.set(r.pid, nowMs);
  }

  /** Details of a pid; procfs on a miss; the kernel's hint when the process is gone. */
  get(pid: number, hint: ProcessHint): ProcessInfo {
    const e = this.entries.get(pid);
    if (e) {
      this.counters.hits++;
      return e.info;
    }
    const read = this.gonePids.has(pid) ? undefined : this.readGone(pid);
    if (read) {
      this.set(pid, { info: read });
      return read;
    }
    this.counters.unresolved++;
    return { pid, ppid: hint.ppid, uid: hint.uid, comm: secrets.scrub(hint.comm), cmd: '', exe: '' };
  }

  /** procfs for a pid not in the cache; remembers one it does not have. */
  private readGone(pid: number): ProcessInfo | undefined {
    this.counters.procfsReads++;
    const read = readProcess(this.procRoot, pid, this.cmdline);
    if (read?.cmdTruncated) this.counters.cmdTruncated++;
    if (!read) {
      if (this.gonePids.size >= this.maxEntries) this.gonePids.delete(this.gonePids.keys().next().value as number);
      this.gonePids.set(pid, this.now());
    }
    return read ?? undefined;
  }

  /**
   * The container a process runs in (null: none), from /proc/<pid>/cgroup
   * read once per process; undefined when that could not be read (the
   * process is gone and was never read).
   */
  containerOf(pid: number): ContainerRef | null | undefined {
    const e = this.entries.get(pid);
    if (e?.container !== undefined) return e.container;
    if (e?.gone) return undefined;
    const container = this.readContainer(pid);
    if (e) {
      if (container !== undefined) e.container = container;
      else e.gone = true; // it exited before its cgroups were read; they will not come back
    }
    return container;
  }

  private readContainer(pid: number): ContainerRef | null | undefined {
    let text: string;
    try {
      text = readFileSync(join(this.procRoot, String(pid), 'cgroup'), 'utf8');
    } catch {
      return undefined;
    }
    return containerFromProcCgroup(text) ?? null;
  }

  /** Forgets processes that exited more than the TTL ago. Runs on a timer. */
  gc(nowMs: number): void {
    for (const [pid, atMs] of this.gonePids) {
      if (nowMs - atMs <= this.exitedTtlMs) break;
      this.gonePids.delete(pid);
    }
    for (const [pid, exitedAtMs] of this.exited) {
      if (nowMs - exitedAtMs <= this.exitedTtlMs) break; // the rest exited later
      this.exited.delete(pid);
      this.entries.delete(pid);
    }
  }

  stats(): ProcessCacheStats {
    return { size: this.entries.size, ...this.counters };
  }

  private set(pid: number, entry: Entry): void {
    this.entries.delete(pid); // re-insert: Map order is then oldest-first
    this.exited.delete(pid); // a reused pid is a live process again
    this.gonePids.delete(pid);
    this.entries.set(pid, entry);
    if (this.entries.size <= this.maxEntries) return;
    // over the cap: drop the longest-exited entry, else the oldest entry
    const victim = this.exited.keys().next().value ?? this.entries.keys().next().value;
    if (victim !== undefined) {
      this.entries.delete(victim);
      this.exited.delete(victim);
      this.counters.evicted++;
    }
  }
}
