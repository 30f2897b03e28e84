/**
 * What convis reports of a process's command line (`--cmdline`):
 *
 * - `redacted` (default): the arguments, with the values of common
 *   secret-bearing arguments replaced by `***` (see maskArgs);
 * - `full`: the arguments as they are;
 * - `none`: nothing (an empty string).
 *
 * In every mode the credentials convis itself was given are replaced too
 * (see secrets.ts): its own command line is one of the ones it reports.
 */
import { MASK, secrets } from '../config/secrets.js';

export type CmdlineMode = 'full' | 'redacted' | 'none';
export const CMDLINE_MODES: readonly CmdlineMode[] = ['full', 'redacted', 'none'];

/** Words that, at the end of an option's name, make its value a secret: --password, --db-password, --api-key, --auth-token. */
const SECRET_OPTION = /^--?(?:[a-z0-9]+[-_.])*(?:pass|passwd|password|pwd|passphrase|secret|token|api[-_]?key|apikey|access[-_]?key|secret[-_]?key|private[-_]?key|credentials?)$/i;

/** NAME=value where NAME ends in _KEY, _TOKEN, _PASSWORD, _SECRET (or is one of those words): env assignments, -e flags. */
const SECRET_ASSIGNMENT = /(^|[\s=,;])((?:[A-Za-z0-9]+_)*(?:[A-Za-z0-9]*_)?(?:KEY|TOKEN|PASSWORD|PASSWD|PWD|SECRET|PASSPHRASE))=([^\s,;]*)/gi;

/** user:password@ in a URL. */
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^\s/:@]*):[^\s/@]*@/gi;

/** An HTTP header given as an argument (curl -H "Authorization: Bearer x"). */
const SECRET_HEADER = /^((?:proxy-)?authorization|x-api-key|api-key|x-auth-token|x-insert-key|x-license-key|cookie|private-token)(\s*:\s*).+$/i;

/** Clients whose -pVALUE (and sshpass's -p VALUE) is a password. */
const MYSQL_LIKE = /^(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mysqlshow|mysqlpump|mysqlslap|mysqlsh|mariadb|mariadb-dump|mariadb-admin|mariadb-import|mariadb-check|mariadb-show|mariadb-slap)$/;

const basename = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** Masks what one argument says in itself: URL passwords, NAME_TOKEN=..., header values. */
function maskWithin(arg: string): string {
  let out = arg.replace(URL_PASSWORD, `$1:${MASK}@`);
  out = out.replace(SECRET_ASSIGNMENT, (_m, before: string, name: string, value: string) => (value === '' ? `${before}${name}=` : `${before}${name}=${MASK}`));
  const h = SECRET_HEADER.exec(out);
  if (h) out = `${h[1]}${h[2]}${MASK}`;
  return out;
}

/** The arguments with the values of secret-bearing ones replaced by ***. */
export function maskArgs(argv: readonly string[]): string[] {
  const prog = basename(argv[0] ?? '');
  const mysqlLike = MYSQL_LIKE.test(prog);
  const sshpass = prog === 'sshpass';
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (i === 0) {
      out.push(maskWithin(arg));
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (arg.startsWith('-') && SECRET_OPTION.test(name)) {
      if (eq > 0) {
        out.push(`${name}=${MASK}`);
      } else {
        out.push(arg);
        // the next argument is the value, unless it is another option
        const next = argv[i + 1];
        if (next !== undefined && !next.startsWith('-')) {
          out.push(MASK);
          i++;
        }
      }
      continue;
    }
    if ((mysqlLike || sshpass) && /^-p.+/.test(arg)) {
      out.push(`-p${MASK}`);
      continue;
    }
    if (sshpass && arg === '-p' && argv[i + 1] !== undefined) {
      out.push(arg, MASK);
      i++;
      continue;
    }
    out.push(maskWithin(arg));
  }
  return out;
}

/** A command line as reported in `mode`, never with one of convis's own credentials. */
export function formatCmdline(argv: readonly string[], mode: CmdlineMode): string {
  if (mode === 'none') return '';
  const args = mode === 'redacted' ? maskArgs(argv) : argv;
  return secrets.scrub(args.join(' '));
}

/**
 * The most characters of a command line convis keeps (New Relic's limit for
 * an attribute, too): a process can have megabytes of arguments, and the
 * process cache holds one per process.
 */
export const MAX_CMD_CHARS = 4096;

/**
 * A command line as reported: masked and scrubbed whole first (so a cut
 * never leaves part of a secret unmasked), then cut to MAX_CMD_CHARS.
 */
export function commandLine(argv: readonly string[], mode: CmdlineMode): { cmd: string; truncated: boolean } {
  const cmd = formatCmdline(argv, mode);
  if (cmd.length <= MAX_CMD_CHARS) return { cmd, truncated: false };
  // not between the halves of a surrogate pair
  const end = /[\ud800-\udbff]/.test(cmd[MAX_CMD_CHARS - 1]!) ? MAX_CMD_CHARS - 1 : MAX_CMD_CHARS;
  return { cmd: cmd.slice(0, end), truncated: true };
}
