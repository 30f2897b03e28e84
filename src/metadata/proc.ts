/**
 * procfs parsing. Every function takes the proc root, so tests run on
 * fixture trees and a containerised agent can read the host's /proc.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { secrets } from '../config/secrets.js';
import { commandLine, type CmdlineMode } from './cmdline.js';

export interface ProcessInfo {
  pid: number;
  ppid: number;
  uid: number;
  /** the kernel's task name (at most 15 bytes) */
  comm: string;
  /** the command line, arguments joined by spaces, at most MAX_CMD_CHARS */
  cmd: string;
  /** set when cmd was cut (longer than MAX_CMD_CHARS, or only the kernel's first 512 bytes could be had) */
  cmdTruncated?: true;
  /** absolute path of the executable, '' when unreadable */
  exe: string;
}

export interface StatFields {
  comm: string;
  ppid: number;
}

/**
 * Parses /proc/<pid>/stat. comm sits in parentheses and may itself contain
 * spaces and ')' characters, so the fields after it are found from the last ')'.
 */
export function parseStat(text: string): StatFields | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  if (!Number.isInteger(ppid)) return undefined;
  return { comm: text.slice(open + 1, close), ppid };
}

/** The real uid from /proc/<pid>/status. */
export function parseStatusUid(text: string): number | undefined {
  const m = /^Uid:\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** /proc/<pid>/cmdline: NUL-separated argv, NUL-terminated. */
export function parseCmdline(raw: Buffer | string): string[] {
  const text = typeof raw === 'string' ? raw : raw.toString('utf8');
  const argv = text.split('\0');
  if (argv.length > 0 && argv[argv.length - 1] === '') argv.pop();
  return argv;
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Reads one process from procfs, its command line as `cmdline` says; undefined when it is gone. */
export function readProcess(procRoot: string, pid: number, cmdline: CmdlineMode = 'full'): ProcessInfo | undefined {
  const dir = join(procRoot, String(pid));
  const stat = tryRead(join(dir, 'stat'));
  if (stat === undefined) return undefined;
  const fields = parseStat(stat);
  if (!fields) return undefined;
  const uid = parseStatusUid(tryRead(join(dir, 'status')) ?? '') ?? 0;
  let exe = '';
  try {
    exe = readlinkSync(join(dir, 'exe'));
  } catch {
    // kernel threads and processes of other users without CAP_SYS_PTRACE
  }
  // a kernel thread has an empty cmdline: show its comm in brackets as ps does
  const argv = parseCmdline(tryRead(join(dir, 'cmdline')) ?? '');
  const { cmd, truncated } = argv.length > 0 ? commandLine(argv, cmdline) : { cmd: cmdline === 'none' ? '' : `[${fields.comm}]`, truncated: false };
  return { pid, ppid: fields.ppid, uid, comm: secrets.scrub(fields.comm), cmd, ...(truncated ? { cmdTruncated: true } : {}), exe: secrets.scrub(exe) };
}

/** Pids of every process (not thread) under the proc root. */
export function listPids(procRoot: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync(procRoot)) {
    if (/^\d+$/.test(name)) pids.push(Number(name));
  }
  return pids;
}
