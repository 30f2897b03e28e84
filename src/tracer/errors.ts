/**
 * The one error class for everything that stops the kernel side from
 * working. `code` is machine-readable (tests and the CLI branch on it);
 * `message` is one sentence a user can act on.
 */
export class BpfError extends Error {
  readonly code: string;
  /** libbpf's own warnings (e.g. the verifier log), for -v output */
  readonly detail: string;

  constructor(code: string, message: string, detail = '') {
    super(message);
    this.name = 'BpfError';
    this.code = code;
    this.detail = detail;
  }
}
