/**
 * Handles of the node's network namespaces, for the start-up snapshot (the
 * kernel's TCP socket iterator sees one namespace at a time): one
 * /proc/PID/ns/net per namespace that has a process, and the bind mounts
 * `ip netns` keeps under /run/netns, which may have none.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function netnsPaths(procRoot: string, bindDirs: readonly string[] = ['/run/netns', '/var/run/netns']): string[] {
  const seen = new Set<number>();
  const paths: string[] = [];
  const add = (path: string): void => {
    try {
      const ino = statSync(path).ino;
      if (seen.has(ino)) return;
      seen.add(ino);
      paths.push(path);
    } catch {
      // gone meanwhile, or not ours to look at: the snapshot does without it
    }
  };
  let entries: string[] = [];
  try {
    entries = readdirSync(procRoot);
  } catch {
    // no procfs: only the agent's own namespace is walked
  }
  // lowest pid first: the host's own processes come before containers'
  const pids = entries.filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
  for (const pid of pids) add(join(procRoot, String(pid), 'ns/net'));
  for (const dir of bindDirs) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names.sort()) add(join(dir, name));
  }
  return paths;
}
