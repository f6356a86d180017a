// Unit tests of wasmeca.js under plain Node (no component): `npm test` in sdk/js.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { Msg, Plugin, WasmecaError, act, exportPlugin, log } from 'wasmeca';

const host = globalThis.fakeHost;
beforeEach(() => {
  host.logs.length = 0;
  host.act = () => 'null';
});

/** What componentize-js would send back for a thrown error: its `payload`. */
function payloadOf(fn) {
  try {
    fn();
  } catch (e) {
    return e.payload;
  }
  assert.fail('expected a throw');
}

test('typed accessors read numbers from numeric strings', () => {
  const m = new Msg({ a: 1, b: '2', c: 'x', d: true, e: 1.5, f: '2.0', g: '0x10', args: { params: { id: '7' }, query: { q: ['1', '2'] }, body: { name: 'n' } } });
  assert.equal(m.int('a'), 1);
  assert.equal(m.int('b'), 2);
  assert.equal(m.int('e'), undefined);
  assert.equal(m.int('f'), undefined);
  assert.equal(m.number('f'), 2);
  assert.equal(m.number('g'), undefined);
  assert.equal(m.number('e'), 1.5);
  assert.equal(m.str('c'), 'x');
  assert.equal(m.str('a'), undefined);
  assert.equal(m.bool('d'), true);
  assert.equal(m.param('id'), '7');
  assert.deepEqual(m.query('q'), ['1', '2']);
  assert.deepEqual(m.body(), { name: 'n' });
  assert.throws(() => m.requireNumber('c'), { name: 'WasmecaError', code: 'invalid_input', status: 400, message: '`c` must be a number, not "x"' });
  assert.throws(() => m.requireStr('zz'), { message: '`zz` is missing; it must be a string' });
  assert.equal(new Msg({}).param('id'), undefined);
});

test('init answers the manifest; handlers share state', () => {
  const guest = exportPlugin((options) =>
    new Plugin('counter', '1.0.0', { n: options.int('start') ?? 0 })
      .add('cmd:inc', (_msg, state) => ({ n: ++state.n }))
      .example({ cmd: 'inc' })
      .routes({ prefix: '/c', pin: 'cmd:*', map: { inc: { GET: true } } }),
  );
  const manifest = guest.init('{"start":5}');
  assert.deepEqual(manifest, {
    name: 'counter',
    version: '1.0.0',
    actions: [{ pattern: 'cmd:inc', example: '{"cmd":"inc"}' }],
    routes: '[{"prefix":"/c","pin":"cmd:*","map":{"inc":{"GET":true}}}]',
  });
  assert.equal(guest.handle(0, '{"cmd":"inc"}'), '{"n":6}');
  assert.equal(guest.handle(0, '{"cmd":"inc"}'), '{"n":7}');
  assert.deepEqual(payloadOf(() => guest.handle(3, '{}')), { code: 'invalid_action', message: 'this plugin has no action 3', details: undefined, status: undefined });
  assert.equal(payloadOf(() => guest.handle(0, '[1]')).code, 'invalid_input');
});

test('errors reach the host as records, never as traps', () => {
  const guest = exportPlugin(
    new Plugin('e', '1.0.0')
      .add('a:1', () => {
        throw WasmecaError.notFound('no such thing', { id: 9 });
      })
      .add('a:2', () => {
        throw new TypeError('oops');
      })
      .add('a:3', () => undefined)
      .add('a:4', () => ({ big: 1n })),
  );
  guest.init('{}');
  assert.deepEqual(payloadOf(() => guest.handle(0, '{}')), { code: 'not_found', message: 'no such thing', details: '{"id":9}', status: 404 });
  assert.deepEqual(payloadOf(() => guest.handle(1, '{}')), {
    code: 'act_execute',
    message: 'seneca: Action a:2 failed: oops.',
    details: '{"name":"TypeError"}',
    status: undefined,
  });
  assert.equal(host.logs[0][0], 'error');
  assert.match(host.logs[0][1], /action a:2 failed: TypeError: oops/);
  assert.equal(guest.handle(2, '{}'), 'null');
  assert.equal(payloadOf(() => guest.handle(3, '{}')).code, 'invalid_result');
  const bad = exportPlugin(() => {
    throw new Error('no config');
  });
  assert.deepEqual(payloadOf(() => bad.init('{}')), { code: 'init_failed', message: 'plugin init failed: no config', details: '{"name":"Error"}', status: undefined });
});

test('async handlers resolve to JSON text or reject with the record', async () => {
  const guest = exportPlugin(
    new Plugin('a', '1.0.0')
      .add('a:1', async () => ({ ok: true }))
      .add('a:2', async () => {
        throw WasmecaError.invalidInput('bad');
      }),
  );
  guest.init('{}');
  assert.equal(await guest.handle(0, '{}'), '{"ok":true}');
  await assert.rejects(guest.handle(1, '{}'), (e) => e.payload.code === 'invalid_input' && e.payload.status === 400);
});

test('act parses answers and turns error records into WasmecaError', () => {
  host.act = (text) => {
    assert.equal(text, '{"cmd":"x"}');
    return '{"ok":1}';
  };
  assert.deepEqual(act({ cmd: 'x' }), { ok: 1 });
  host.act = () => {
    const e = new Error('component error');
    e.payload = { code: 'act_not_found', message: 'nobody', details: '{"a":1}', status: undefined };
    throw e;
  };
  assert.throws(() => act(new Msg({ cmd: 'x' })), (e) => e instanceof WasmecaError && e.code === 'act_not_found' && e.details.a === 1);
  log.info('n =', 3, { a: [1] });
  assert.deepEqual(host.logs.at(-1), ['info', 'n = 3 {"a":[1]}']);
});
