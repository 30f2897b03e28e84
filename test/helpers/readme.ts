/** The README, and the names in the first column of its tables, for the tests that hold it to the code. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The `backquoted` first-column names of the markdown table that follows the heading line `heading`. */
export function tableNames(heading: string): string[] {
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has "${heading}"`);
  const names: string[] = [];
  let inTable = false;
  for (const row of readme.slice(start + 1).split('\n').slice(1)) {
    if (row.startsWith('|')) {
      inTable = true;
      const m = /^\| `([^`]+)` \|/.exec(row);
      if (m) names.push(m[1]!);
    } else if (inTable) break;
  }
  return names;
}
