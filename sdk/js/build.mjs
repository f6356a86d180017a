#!/usr/bin/env node
// build.mjs: builds a JavaScript wasmeca plugin into a WebAssembly component.
//
//   node <repo>/sdk/js/build.mjs [entry.js] [-o out.wasm] [--wit dir]
//
// Defaults: entry `src/index.js`, output `dist/plugin.wasm`, WIT the repository's `wit/`.
// Two steps:
//   1. rolldown bundles the entry with everything it imports into one ES module; `wasmeca`
//      resolves to this folder's wasmeca.js, and `wasmeca:*` / `wasi:*` imports stay imports
//      (they are the component's imports).
//   2. componentize-js (StarlingMonkey engine) turns the bundle into a component of the
//      `plugin` world, without the `http` and `fetch-event` features, so the component imports
//      only wasi:cli/io/clocks/random and wasmeca:plugin/host (no wasi:http, no async ABI).
// Install the tools once with `sdk/toolchains.sh js` (npm ci in this folder).

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  if (message) console.error(`build.mjs: ${message}`);
  console.error('usage: node build.mjs [entry.js] [-o out.wasm] [--wit dir]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { entry: 'src/index.js', out: 'dist/plugin.wasm', wit: resolve(here, '../../wit') };
  let entrySet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '--out') opts.out = argv[++i] ?? usage(`${a} needs a path`);
    else if (a === '--wit') opts.wit = argv[++i] ?? usage('--wit needs a folder');
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (!entrySet) {
      opts.entry = a;
      entrySet = true;
    } else usage(`unexpected argument ${a}`);
  }
  return opts;
}

async function tools() {
  try {
    const { rolldown } = await import('rolldown');
    const { componentize } = await import('@bytecodealliance/componentize-js');
    return { rolldown, componentize };
  } catch (e) {
    console.error(`build.mjs: the JS toolchain is not installed in ${here} (${e.message})`);
    console.error('install it with: sdk/toolchains.sh js   (npm ci in sdk/js)');
    process.exit(1);
  }
}

const opts = parseArgs(process.argv.slice(2));
const entry = resolve(opts.entry);
const out = resolve(opts.out);
if (!existsSync(entry)) usage(`no entry file ${entry}`);
if (!existsSync(opts.wit)) usage(`no WIT folder ${opts.wit}`);

const { rolldown, componentize } = await tools();
const started = Date.now();
const work = await mkdtemp(join(tmpdir(), 'wasmeca-js-'));
try {
  const bundlePath = join(work, 'plugin.js');
  const bundle = await rolldown({
    input: entry,
    platform: 'neutral',
    external: [/^wasmeca:/, /^wasi:/],
    resolve: { alias: { wasmeca: join(here, 'wasmeca.js') }, mainFields: ['module', 'main'] },
    logLevel: 'warn',
  });
  await bundle.write({ file: bundlePath, format: 'esm' });
  await bundle.close();

  const { component } = await componentize({
    sourcePath: bundlePath,
    witPath: resolve(opts.wit),
    worldName: 'plugin',
    disableFeatures: ['http', 'fetch-event'],
  });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  const kib = Math.round(component.length / 1024);
  console.error(`built ${opts.out} (${kib} KiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await rm(work, { recursive: true, force: true });
}
