#!/usr/bin/env node
// prune-lock.mjs: makes package-lock.json acceptable to `npm ci` on a registry that serves only
// some platforms' optional native packages (the one these machines reach lacks, e.g., rolldown's
// darwin and win32 bindings). npm writes their names into the lock's `optionalDependencies` but
// cannot write their entries, and `npm ci` then calls the lock out of sync. This drops each
// optional dependency that has no entry in the lock. Run it after every `npm install` here:
//   npm install && node prune-lock.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const file = fileURLToPath(new URL('./package-lock.json', import.meta.url));
const lock = JSON.parse(readFileSync(file, 'utf8'));
const packages = lock.packages;

/** Whether `name` resolves from the package at `from` (Node's walk up the node_modules folders). */
function resolves(from, name) {
  for (let base = from; ; ) {
    if (packages[`${base ? `${base}/` : ''}node_modules/${name}`]) return true;
    if (!base) return false;
    const at = base.lastIndexOf('/node_modules/');
    base = at < 0 ? '' : base.slice(0, at);
  }
}

let dropped = 0;
for (const [path, pkg] of Object.entries(packages)) {
  for (const name of Object.keys(pkg.optionalDependencies ?? {})) {
    if (!resolves(path, name)) {
      delete pkg.optionalDependencies[name];
      dropped += 1;
      console.error(`prune-lock: ${path || '(root)'} -> ${name} (not in the lock)`);
    }
  }
}
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.error(`prune-lock: dropped ${dropped} optional dependencies with no entry`);
