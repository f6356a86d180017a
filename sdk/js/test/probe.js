// probe@0.1.0: exercises every part of the JS SDK against a real host (errors, logs, nested
// acts, prior, state, async handlers, typed helpers, options). Built and run by hand or by a
// test: `wasmeca act --log info sdk/js/test/wasmeca.toml 'probe:throw'` after
// `node sdk/js/build.mjs sdk/js/test/probe.js -o sdk/js/test/dist/probe.wasm`.

import { Plugin, WasmecaError, act, exportPlugin, log } from 'wasmeca';

export const guest = exportPlugin((options) => {
  if (options.bool('fail')) throw new RangeError('options.fail is set');
  return (
    new Plugin('probe', '0.1.0', { calls: 0 })
      // An unexpected exception: the caller gets `act_execute`, the log gets the stack.
      .add('probe:throw', () => {
        null.boom();
      })
      // A deliberate error with details and a status.
      .add('probe:raise', () => {
        throw new WasmecaError('teapot', 'short and stout', { details: { spout: true }, status: 418 });
      })
      .add('probe:log', (msg) => {
        log.info('hello from js', { tx: msg.tx() }, 42);
        log.warn('a warning from js');
        return { logged: true };
      })
      // act() of a pattern nobody serves: the error as a value.
      .add('probe:act', () => {
        try {
          return { answer: act({ nobody: 'serves-this' }) };
        } catch (e) {
          return { caught: e instanceof WasmecaError, code: e.code, message: e.message, status: e.status ?? null };
        }
      })
      // act() whose error is not caught: passes up unchanged, like `?` in Rust.
      .add('probe:act-uncaught', () => act({ nobody: 'serves-this' }))
      // Acts the message in `relay` (another plugin loaded beside this one answers it).
      .add('probe:relay', (msg) => ({ relayed: act(msg.get('relay')) }))
      // Acts each message of `chain` in turn (state kept between them shows in the answers).
      .add('probe:chain', (msg) => msg.get('chain').map((m) => act(m)))
      .add('probe:state', (_msg, state) => ({ calls: ++state.calls }))
      .add('probe:async', async (msg) => {
        await new Promise((resolve) => resolve());
        return { async: true, name: msg.str('name') ?? null };
      })
      .add('probe:async-throw', async () => {
        await null;
        throw WasmecaError.notFound('nothing here, asynchronously');
      })
      .add('probe:typed', (msg) => ({
        str: msg.str('s') ?? null,
        number: msg.number('n') ?? null,
        int: msg.int('n') ?? null,
        bool: msg.bool('b') ?? null,
        param: msg.param('id') ?? null,
        query: msg.query('q') ?? null,
        body: msg.body() ?? null,
        tx: typeof msg.tx(),
      }))
      .add('probe:require', (msg) => ({ n: msg.requireNumber('n') }))
      .add('probe:bad-result', () => ({ big: 1n }))
      .add('probe:not-objarr', () => 'just text')
      .add('probe:void', () => undefined)
      .add('probe:options', () => options.data)
      // Overrides the user plugin's load (loaded before this one) and decorates its answer.
      .add('module:user,if:load', (msg) => ({ ...msg.prior(), probed: true }))
      .example({ module: 'user', if: 'load', id: 1 })
  );
});
