/**
 * Every credential convis was given (insert keys, passwords, header values,
 * tokens read from files or the environment), so that nothing it writes or
 * sends can carry one: its own command line is one of the processes it
 * reports, and an error or a log line may quote what it was given.
 *
 * One set for the process: the parsers add to it as they read credentials,
 * and the logger, the process cache and the exit paths scrub through it.
 */

/** What a credential is replaced with. */
export const MASK = '***';

export class Secrets {
  private values: string[] = [];

  /** Remembers a credential, and the forms it takes on a command line. */
  add(value: string | undefined): void {
    if (value === undefined) return;
    const forms = [value, value.trim(), value.replaceAll(',', '\\,')];
    for (const v of forms) {
      if (v === '' || this.values.includes(v)) continue;
      this.values.push(v);
    }
    // longest first, so a secret that contains another goes whole
    this.values.sort((a, b) => b.length - a.length);
  }

  /** `text` with every credential replaced by ***. */
  scrub(text: string): string {
    let out = text;
    for (const v of this.values) if (out.includes(v)) out = out.replaceAll(v, MASK);
    return out;
  }

  get size(): number {
    return this.values.length;
  }
}

/** The process's credentials. */
export const secrets = new Secrets();

/**
 * A credential kept in a file (key_file=, password_file=, ...): its
 * contents without the trailing newline, remembered as a secret. Throws a
 * message naming the option and the path (never the contents) when the file
 * cannot be read or is empty; `fail` turns it into the caller's error.
 */
export function readCredentialFile(option: string, path: string, fail: (message: string) => never, read: (path: string) => string): string {
  if (path.trim() === '') fail(`${option} is empty`);
  let text: string;
  try {
    text = read(path);
  } catch (e) {
    fail(`${option} ${JSON.stringify(path)} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const value = text.replace(/[\r\n]+$/, '');
  secrets.add(value);
  if (value.trim() === '') fail(`${option} ${JSON.stringify(path)} is empty`);
  return value;
}
