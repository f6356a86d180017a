// {{name}}: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
// `GET /{{name}}/hello?name=...`.

import { Plugin, exportPlugin, log } from 'wasmeca';

export const guest = exportPlugin(() =>
  new Plugin('{{name}}', '0.1.0', { count: 0 })
    .add('role:{{name}},cmd:hello', (msg, state) => {
      state.count += 1;
      // From the message, or from the query string over REST.
      const name = msg.str('name') ?? msg.query('name') ?? 'World';
      log.info(`greeting ${name}`);
      return { message: `Hello ${name}!`, count: state.count };
    })
    .example({ role: '{{name}}', cmd: 'hello', name: 'World' })
    .routes({ prefix: '/{{name}}', pin: 'role:{{name}},cmd:*', map: { hello: true } }),
);
