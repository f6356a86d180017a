// {{name}}: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
// `GET /{{name}}/hello?name=...`. Each greeting publishes the event `evt:{{name}},cmd:greeted`;
// the observer below hears it and keeps the greeting in the host's entity store, which outlives
// the instance: `role:{{name}},cmd:greetings` (`GET /{{name}}/greetings`) lists them.

import { Plugin, entity, exportPlugin, log, publish } from 'wasmeca';

/** Greetings, in the host's entity store (base `{{name}}`, name `greeting`). */
const greetings = entity('{{name}}/greeting');

export const guest = exportPlugin(() =>
  new Plugin('{{name}}', '0.1.0', { count: 0 })
    .add('role:{{name}},cmd:hello', (msg, state) => {
      state.count += 1;
      // From the message, or from the query string over REST.
      const name = msg.str('name') ?? msg.query('name') ?? 'World';
      log.info(`greeting ${name}`);
      publish({ evt: '{{name}}', cmd: 'greeted', name });
      return { message: `Hello ${name}!`, count: state.count };
    })
    .example({ role: '{{name}}', cmd: 'hello', name: 'World' })
    .add('role:{{name}},cmd:greetings', () => greetings.list({ sort$: { name: 1 } }))
    // An observer: its result is discarded; throwing has the event delivered again.
    .observe('evt:{{name}},cmd:greeted', (event) => {
      greetings.save({ name: event.str('name') });
    })
    .routes({ prefix: '/{{name}}', pin: 'role:{{name}},cmd:*', map: { hello: true, greetings: true } }),
);
