// `node --import ./test/register-fake-host.mjs`: resolves `wasmeca:plugin/host@0.2.0` to
// fake-host.mjs and `wasmeca` to ../wasmeca.js, so the SDK and plugins load under plain Node.
import { register } from 'node:module';

register(
  'data:text/javascript,' +
    encodeURIComponent(`
      const fake = ${JSON.stringify(new URL('./fake-host.mjs', import.meta.url).href)};
      const sdk = ${JSON.stringify(new URL('../wasmeca.js', import.meta.url).href)};
      export async function resolve(specifier, context, next) {
        if (specifier === 'wasmeca:plugin/host@0.2.0') return { url: fake, shortCircuit: true };
        if (specifier === 'wasmeca') return { url: sdk, shortCircuit: true };
        return next(specifier, context);
      }`),
);
