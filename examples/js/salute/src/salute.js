// salute@1.0.0 in JavaScript: the same action as the Rust seed (plugins/salute). `cmd:salute`
// answers `{id, message: "Hello <name>!"}`; `id` counts this instance's greetings.

import { Plugin, exportPlugin } from 'wasmeca';

export const guest = exportPlugin(() =>
  new Plugin('salute', '1.0.0', { count: 0 })
    .add('cmd:salute', (msg, state) => {
      state.count += 1;
      return { id: state.count, message: `Hello ${msg.str('name') ?? 'World'}!` };
    })
    .example({ cmd: 'salute', name: 'World' }),
);
