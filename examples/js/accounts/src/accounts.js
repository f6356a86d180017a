// accounts@1.0.0 in JavaScript: users kept in the host's entity store (`accounts/user`, so they
// outlive the instance), a count of creations in the host's cache, and an event
// `evt:user,cmd:created` published for every new user (examples/python/audit observes it).
// Created with `wasmeca new js accounts`, built with `wasmeca build`.
//
//   role:accounts,cmd:create,name:Ann    saves a user, publishes evt:user,cmd:created
//   role:accounts,cmd:load,id:...        the user, or not_found
//   role:accounts,cmd:list               every user, by name
//   role:accounts,cmd:remove,id:...      the removed user, or not_found
//   role:accounts,cmd:stats              {created: how many creations the cache counted}
//
// Over REST: POST /accounts/create {"name": "Ann"}, GET /accounts/list, GET /accounts/load/:id.

import { Plugin, WasmecaError, cache, entity, exportPlugin, log, publish } from 'wasmeca';

/** The users, in the host's store. */
const users = entity('accounts/user');

/** The id from the route (`args.params.id`) or the message (`id`). */
function idOf(msg) {
  const id = msg.param('id') ?? msg.str('id');
  if (!id) throw WasmecaError.invalidInput('an `id` is needed (in the path or the message)');
  return id;
}

export const guest = exportPlugin(() =>
  new Plugin('accounts', '1.0.0')
    .add('role:accounts,cmd:create', (msg) => {
      const name = msg.body()?.name ?? msg.str('name');
      if (typeof name !== 'string' || name.trim() === '') {
        throw WasmecaError.invalidInput('a non-empty `name` is needed (in the body or the message)');
      }
      const user = users.save({ name });
      // incr answers null for a missing key (and creates nothing): start the count then.
      if (cache.incr('accounts:created') === null) cache.set('accounts:created', 1);
      publish({ evt: 'user', cmd: 'created', id: user.id, name: user.name });
      log.info(`created user ${user.id} (${user.name})`);
      return user;
    })
    .example({ role: 'accounts', cmd: 'create', name: 'Ann' })
    .add('role:accounts,cmd:load', (msg) => {
      const id = idOf(msg);
      const user = users.load(id);
      if (user === null) throw WasmecaError.notFound(`no user with id ${id}`);
      return user;
    })
    .add('role:accounts,cmd:list', () => users.list({ sort$: { name: 1 } }))
    .example({ role: 'accounts', cmd: 'list' })
    .add('role:accounts,cmd:remove', (msg) => {
      const id = idOf(msg);
      const removed = users.remove(id);
      if (removed === null) throw WasmecaError.notFound(`no user with id ${id}`);
      return removed;
    })
    .add('role:accounts,cmd:stats', () => ({ created: cache.get('accounts:created') ?? 0 }))
    .example({ role: 'accounts', cmd: 'stats' })
    .routes({
      prefix: '/accounts',
      pin: 'role:accounts,cmd:*',
      map: {
        create: { POST: true },
        list: { GET: true },
        load: { GET: true, suffix: '/:id' },
        remove: { DELETE: true, suffix: '/:id' },
        stats: { GET: true },
      },
    }),
);
