// user@1.0.0 in JavaScript: the seed's CRUD module (plugins/user in Rust), written with the
// wasmeca JS SDK. `module:user,if:list|load|edit|create|delete` over an in-memory list that
// starts with users 1, 2, 3 (甲, 乙, 丙), reachable over REST through its seneca-web route map
// (prefix `/user`). The id comes from the route (`args.params.id`) or from the message (`id`);
// names from the body (`args.body.name`) or the message (`name`).

import { Plugin, WasmecaError, exportPlugin } from 'wasmeca';

/** The in-memory table: all users, in id order. */
class Users {
  constructor() {
    this.list = [
      { id: 1, name: '甲' },
      { id: 2, name: '乙' },
      { id: 3, name: '丙' },
    ];
  }

  /** The index of the user the message names, or `invalid_input` / `not_found`. */
  position(msg) {
    const param = msg.param('id');
    const id = (/^[+-]?\d+$/.test(param ?? '') ? Number(param) : undefined) ?? msg.int('id');
    if (id === undefined) throw WasmecaError.invalidInput('an `id` is needed (in the path or the message)');
    const at = this.list.findIndex((u) => u.id === id);
    if (at < 0) throw WasmecaError.notFound(`no user with id ${id}`);
    return at;
  }

  /** The name from the body or the message: a non-empty string, or `invalid_input`. */
  static nameFrom(msg) {
    const fromBody = msg.body()?.name;
    const name = typeof fromBody === 'string' ? fromBody : msg.str('name');
    if (typeof name !== 'string' || name.trim() === '') {
      throw WasmecaError.invalidInput('a non-empty `name` is needed (in the body or the message)');
    }
    return name;
  }
}

export const guest = exportPlugin(() =>
  new Plugin('user', '1.0.0', new Users())
    .add('module:user,if:list', (_msg, users) => users.list)
    .example({ module: 'user', if: 'list' })
    .add('module:user,if:load', (msg, users) => users.list[users.position(msg)])
    .example({ module: 'user', if: 'load', id: 2 })
    .add('module:user,if:edit', (msg, users) => {
      const user = users.list[users.position(msg)];
      user.name = Users.nameFrom(msg);
      return user;
    })
    .example({ module: 'user', if: 'edit', id: 2, name: '乙二' })
    .add('module:user,if:create', (msg, users) => {
      const id = Math.max(0, ...users.list.map((u) => u.id)) + 1;
      const user = { id, name: Users.nameFrom(msg) };
      users.list.push(user);
      return user;
    })
    .example({ module: 'user', if: 'create', name: '丁' })
    .add('module:user,if:delete', (msg, users) => users.list.splice(users.position(msg), 1)[0])
    .example({ module: 'user', if: 'delete', id: 3 })
    .routes({
      prefix: '/user',
      pin: 'module:user,if:*',
      map: {
        list: { GET: true, name: '' },
        load: { GET: true, name: '', suffix: '/:id' },
        edit: { PUT: true, name: '', suffix: '/:id' },
        create: { POST: true, name: '' },
        delete: { DELETE: true, name: '', suffix: '/:id' },
      },
    }),
);
