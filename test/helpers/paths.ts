import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, from dist/test/helpers. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
