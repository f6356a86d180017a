// Unit tests of wasmeca.js under plain Node (no component): `npm test` in sdk/js.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { Msg, Plugin, WasmecaError, act, cache, entity, exportPlugin, log, publish } from 'wasmeca';

const host = globalThis.fakeHost;
beforeEach(() => {
  host.logs.length = 0;
  host.act = () => 'null';
  host.publish = () => undefined;
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
    observers: [],
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

test('observers are declared in the manifest; their results are discarded, their errors fail the event', async () => {
  const guest = exportPlugin(
    new Plugin('audit', '1.0.0', { created: 0 })
      .observe('evt:user,cmd:created', (event, state) => {
        assert.equal(event.str('evt'), 'user');
        state.created += 1;
        return { ignored: true };
      })
      .observe('evt:user,cmd:bad', () => {
        throw new TypeError('cannot');
      })
      .observe('evt:user,cmd:later', async () => {
        throw WasmecaError.invalidInput('later');
      })
      .add('role:audit,cmd:count', (_msg, state) => ({ created: state.created })),
  );
  const manifest = guest.init('{}');
  assert.deepEqual(manifest.observers, [
    { pattern: 'evt:user,cmd:created', example: undefined },
    { pattern: 'evt:user,cmd:bad', example: undefined },
    { pattern: 'evt:user,cmd:later', example: undefined },
  ]);
  assert.equal(guest.observe(0, '{"evt":"user","cmd":"created"}'), undefined);
  guest.observe(0, '{"evt":"user","cmd":"created"}');
  assert.equal(guest.handle(0, '{}'), '{"created":2}');
  assert.deepEqual(payloadOf(() => guest.observe(1, '{}')), {
    code: 'observe_failed',
    message: 'observer evt:user,cmd:bad failed: cannot',
    details: '{"name":"TypeError"}',
    status: undefined,
  });
  await assert.rejects(guest.observe(2, '{}'), (e) => e.payload.code === 'invalid_input');
  assert.equal(payloadOf(() => guest.observe(7, '{}')).code, 'invalid_observer');
  assert.equal(payloadOf(() => guest.observe(0, 'nope')).code, 'invalid_input');
});

test('publish sends the event as JSON text and turns error records into WasmecaError', () => {
  const sent = [];
  host.publish = (text) => {
    sent.push(text);
  };
  assert.equal(publish({ evt: 'user', cmd: 'created', id: 1 }), undefined);
  assert.deepEqual(sent, ['{"evt":"user","cmd":"created","id":1}']);
  host.publish = () => {
    const e = new Error('component error');
    e.payload = { code: 'publish_failed', message: 'broker down', details: undefined, status: 503 };
    throw e;
  };
  assert.throws(() => publish({ evt: 'x' }), (e) => e instanceof WasmecaError && e.code === 'publish_failed' && e.status === 503);
});

test('entity handles act sys:entity messages; a missing entity is null', () => {
  const seen = [];
  const answers = [];
  host.act = (text) => {
    seen.push(JSON.parse(text));
    return answers.shift() ?? 'null';
  };
  const items = entity('shop/item');
  assert.equal(items.canon, '-/shop/item');
  answers.push('{"id":"a1","name":"apple","entity$":"-/shop/item"}');
  assert.deepEqual(items.save({ name: 'apple' }), { id: 'a1', name: 'apple', entity$: '-/shop/item' });
  assert.deepEqual(seen.at(-1), {
    sys: 'entity',
    cmd: 'save',
    base: 'shop',
    name: 'item',
    q: {},
    qent: { entity$: '-/shop/item' },
    ent: { name: 'apple', entity$: '-/shop/item' },
  });
  assert.equal(items.load('zz'), null);
  assert.deepEqual(seen.at(-1).q, { id: 'zz' });
  assert.equal(items.load(7), null);
  assert.deepEqual(seen.at(-1).q, { id: 7 });
  answers.push('[{"id":"a1"}]');
  assert.deepEqual(items.list({ color: 'red' }), [{ id: 'a1' }]);
  assert.deepEqual(seen.at(-1).q, { color: 'red' });
  assert.deepEqual(items.list(), []);
  assert.deepEqual(seen.at(-1).q, {});
  assert.equal(items.remove('a1'), null);
  assert.deepEqual(seen.at(-1).q, { load$: true, id: 'a1' });
  assert.throws(() => items.save([1]), { code: 'invalid_input' });
  assert.equal(entity('user').canon, '-/-/user');
  assert.deepEqual(entity('z1/shop/item').parts, { zone: 'z1', base: 'shop', name: 'item' });
});

test('cache acts role:cache; a missing key is null', () => {
  const seen = [];
  const answers = [];
  host.act = (text) => {
    seen.push(JSON.parse(text));
    return answers.shift() ?? '{}';
  };
  cache.set('visits', 0);
  assert.deepEqual(seen.at(-1), { role: 'cache', cmd: 'set', key: 'visits', val: 0 });
  answers.push('{"value":1}');
  assert.equal(cache.incr('visits'), 1);
  assert.deepEqual(seen.at(-1), { role: 'cache', cmd: 'incr', key: 'visits', val: 1 });
  answers.push('{"value":-2}');
  assert.equal(cache.decr('visits', 3), -2);
  answers.push('{"value":false}'); // the host's answer for a missing key
  assert.equal(cache.incr('nope'), null);
  answers.push('{"value":{"a":1}}');
  assert.deepEqual(cache.get('k'), { a: 1 });
  answers.push('{"value":null}');
  assert.equal(cache.get('missing'), null);
  assert.deepEqual(seen.at(-1), { role: 'cache', cmd: 'get', key: 'missing' });
  cache.add('k2', 'v');
  cache.delete('k2');
  assert.deepEqual(seen.at(-1), { role: 'cache', cmd: 'delete', key: 'k2' });
});
