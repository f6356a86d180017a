// wasmeca.js: write wasmeca plugins (Seneca-style message-pattern services) in JavaScript.
//
// The same shape as the Rust SDK (sdk/src/lib.rs): build a Plugin with a name, a version and
// a state, add actions by pattern and observers of events, read messages with typed helpers,
// act other patterns, publish events, keep data in the host's entity store and cache, log,
// declare seneca-web routes, and export it as the `guest` interface of the `plugin` world
// (wit/plugin.wit, wasmeca:plugin@0.2.0).
//
//   import { Plugin, WasmecaError, act, log, exportPlugin } from 'wasmeca';
//
//   export const guest = exportPlugin((options) =>
//     new Plugin('salute', '1.0.0', { count: 0 })
//       .add('cmd:salute', (msg, state) => {
//         state.count += 1;
//         log.info(`salute number ${state.count}`);
//         return { message: `Hello ${msg.str('name') ?? 'World'}!` };
//       })
//       .example({ cmd: 'salute', name: 'World' })
//       .observe('evt:user,cmd:created', (event, state) => {
//         state.users = (state.users ?? 0) + 1;
//       }));
//
// Build with `node <sdk>/js/build.mjs src/plugin.js -o dist/plugin.wasm` (bundles the module with
// its imports, then componentize-js with the StarlingMonkey engine).
//
// Handlers get `(msg, state)`: `msg` is a Msg (the JSON message plus helpers), `state` is the
// plugin's state, kept for the life of the instance (between calls, like a Node Seneca plugin's
// closure variables). A handler answers an object, an array or null (undefined counts as null),
// or a Promise of one. A thrown WasmecaError reaches the caller as it is (code, message,
// details, status); any other exception becomes Seneca's `act_execute` error and is logged with
// its stack. A handler never traps the instance.
//
// Observers get `(event, state)` for every event their pattern matches; what they return is
// discarded, and a thrown error (or a rejected Promise) means "not handled": the host delivers
// the event again and dead-letters it after its attempts.
//
// Data that must outlive the instance goes in the host's store: `entity('shop/item')` gives
// save/load/list/remove over `sys:entity`, `cache` get/set/add/incr/decr/delete over
// `role:cache`.

import * as host from 'wasmeca:plugin/host@0.2.0';

/** An error as callers see it: a code, a message, optional JSON details and an HTTP status. */
export class WasmecaError extends Error {
  /**
   * @param {string} code machine-readable code, e.g. `not_found`
   * @param {string} message a sentence for people
   * @param {{details?: any, status?: number}} [extra] JSON details and HTTP status (400-599)
   */
  constructor(code, message, { details, status } = {}) {
    super(message);
    this.name = 'WasmecaError';
    /** Machine-readable code. */
    this.code = code;
    /** Optional JSON details (any JSON value). */
    this.details = details;
    /** Optional HTTP status for REST and HTTP callers. */
    this.status = status;
  }

  /** `invalid_input` with status 400: the message is missing something or has a bad value. */
  static invalidInput(message, details) {
    return new WasmecaError('invalid_input', message, { details, status: 400 });
  }

  /** `not_found` with status 404. */
  static notFound(message, details) {
    return new WasmecaError('not_found', message, { details, status: 404 });
  }

  /** Sets the JSON details; returns this error. */
  withDetails(details) {
    this.details = details;
    return this;
  }

  /** Sets the HTTP status; returns this error. */
  withStatus(status) {
    this.status = status;
    return this;
  }

  /** The error as the WIT `error` record (details as JSON text). */
  toRecord() {
    return {
      code: String(this.code),
      message: String(this.message),
      details: this.details === undefined ? undefined : JSON.stringify(this.details),
      status: validStatus(this.status),
    };
  }

  /** An error from the WIT `error` record (an `act` or `prior` that failed). */
  static fromRecord(record) {
    let details = record.details ?? undefined;
    if (details !== undefined) {
      try {
        details = JSON.parse(details);
      } catch {
        // not JSON: keep the text
      }
    }
    return new WasmecaError(record.code, record.message, { details, status: record.status ?? undefined });
  }

  toJSON() {
    return { code: this.code, message: this.message, details: this.details, status: this.status };
  }
}

/** A status the WIT `u16` accepts, or undefined. */
function validStatus(status) {
  const n = Number(status);
  return Number.isInteger(n) && n >= 100 && n <= 599 ? n : undefined;
}

/** Decimal numbers as REST params and query values spell them: `12`, `-1.5`, `2e3`. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
/** Decimal integers: `12`, `+3`, `-7`. */
const INTEGER = /^[+-]?\d+$/;

/** A number from a number or a numeric string (REST params and query values are strings). */
function toNumber(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && DECIMAL.test(v.trim())) return Number(v.trim());
  return undefined;
}

/** An integer from an integral number or an integer string (`"2.0"` is not one, `2.0` is). */
function toInt(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? v : undefined;
  if (typeof v === 'string' && INTEGER.test(v.trim())) return Number(v.trim());
  return undefined;
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function missing(key, what, got) {
  const message =
    got === undefined ? `\`${key}\` is missing; it must be ${what}` : `\`${key}\` must be ${what}, not ${JSON.stringify(got)}`;
  return WasmecaError.invalidInput(message, { field: key });
}

/**
 * A message: the JSON object in `data`, with typed accessors. Getters answer `undefined` when
 * the key is missing or has the wrong type.
 */
export class Msg {
  /** @param {object} data the message as a JSON object */
  constructor(data = {}) {
    /** The message as a plain JSON object (meta keys such as `tx$` included). */
    this.data = data;
  }

  /** The value under `key`. */
  get(key) {
    return this.data[key];
  }

  /** A string value. */
  str(key) {
    const v = this.data[key];
    return typeof v === 'string' ? v : undefined;
  }

  /** A number, also read from a numeric string. */
  number(key) {
    return toNumber(this.data[key]);
  }

  /** An integer, also read from an integer string (`1.5` and `"1.0"` are not ones). */
  int(key) {
    return toInt(this.data[key]);
  }

  /** A boolean (`true`/`false`, or the strings `"true"`/`"false"`). */
  bool(key) {
    const v = this.data[key];
    if (typeof v === 'boolean') return v;
    if (v === 'true') return true;
    if (v === 'false') return false;
    return undefined;
  }

  /** A string that must be there: else throws `invalid_input` naming the key. */
  requireStr(key) {
    const s = this.str(key);
    if (s === undefined) throw missing(key, 'a string', this.data[key]);
    return s;
  }

  /** A number that must be there: else throws `invalid_input` naming the key. */
  requireNumber(key) {
    const n = this.number(key);
    if (n === undefined) throw missing(key, 'a number', this.data[key]);
    return n;
  }

  /** The transaction id (`tx$`) this message belongs to. */
  tx() {
    return this.str('tx$');
  }

  /** A path parameter from a REST route (`args.params.<name>`, seneca-web's shape): a string. */
  param(name) {
    const v = this.data.args?.params?.[name];
    return typeof v === 'string' ? v : undefined;
  }

  /** A query parameter from a REST route (`args.query.<name>`): a string, or an array of strings for repeated keys. */
  query(name) {
    return this.data.args?.query?.[name];
  }

  /** The request body from a REST route (`args.body`). */
  body() {
    return this.data.args?.body;
  }

  /** Calls the action this one overrode (Seneca's `this.prior(msg)`) with this message. */
  prior() {
    return prior(this.data);
  }

  toJSON() {
    return this.data;
  }
}

/** Message to JSON text for the host: a Msg, an object, or JSON text as it is. */
function messageText(msg) {
  if (typeof msg === 'string') return msg;
  return JSON.stringify(msg instanceof Msg ? msg.data : msg);
}

/** Calls a host function that answers `result<json, error>`: the parsed answer, or throws a WasmecaError. */
function callHost(fn, msg) {
  let answer;
  try {
    answer = fn(messageText(msg));
  } catch (e) {
    // componentize-js throws a ComponentError whose `payload` is the WIT error record.
    if (e && isObject(e.payload) && typeof e.payload.code === 'string') throw WasmecaError.fromRecord(e.payload);
    throw e;
  }
  return JSON.parse(answer);
}

/**
 * Acts a message: the host routes it to whichever plugin (or remote service) serves the best
 * matching pattern, and returns the parsed answer. The message inherits the current `tx$`.
 * Throws a WasmecaError (for example `act_not_found`) when the act fails, so a handler that
 * does not catch it passes the error up unchanged.
 *
 * @param {object|Msg|string} msg the message (an object, a Msg, or JSON text)
 */
export function act(msg) {
  return callHost(host.act, msg);
}

/**
 * Calls the action the current one overrode (Seneca's `prior`); with none, the answer is the
 * message's `default$` or null.
 */
export function prior(msg) {
  return callHost(host.prior, msg);
}

/**
 * Publishes an event (an object, a Msg or JSON text): every observer whose pattern matches it
 * hears it, in this host and, when the host has a broker, in every service observing it.
 * Returns once the event is accepted; no observer anywhere is not an error. The event inherits
 * the current `tx$`. Throws a WasmecaError when the host refuses it.
 *
 *   publish({ evt: 'user', cmd: 'created', id: user.id });
 *
 * @param {object|Msg|string} event the event
 */
export function publish(event) {
  try {
    host.publish(messageText(event));
  } catch (e) {
    if (e && isObject(e.payload) && typeof e.payload.code === 'string') throw WasmecaError.fromRecord(e.payload);
    throw e;
  }
}

/** An id (string or number) as a query `{id}`; an object query as it is. */
function asQuery(q) {
  return isObject(q) ? q : { id: q };
}

/**
 * An entity type of the host's store (`sys:entity`, Seneca's entity API), named by its canon:
 * `name`, `base/name` or `zone/base/name`. Get one with `entity('shop/item')`.
 */
export class Entity {
  /** @param {string} canon `name`, `base/name` or `zone/base/name` */
  constructor(canon) {
    const pieces = String(canon).split('/');
    const [zone, base, name] =
      pieces.length >= 3 ? pieces.slice(0, 3) : pieces.length === 2 ? [undefined, ...pieces] : [undefined, undefined, pieces[0]];
    const part = (p) => (p && p !== '-' ? p : undefined);
    /** `zone`, `base` and `name`, as the store's messages carry them (absent parts omitted). */
    this.parts = {};
    if (part(zone)) this.parts.zone = zone;
    if (part(base)) this.parts.base = base;
    this.parts.name = name;
    /** The canon as Seneca writes it (`-/shop/item`): the `entity$` of what is saved. */
    this.canon = `${part(zone) ?? '-'}/${part(base) ?? '-'}/${name}`;
  }

  /** The `sys:entity` message for `cmd` with this type's parts and the query `q`. */
  message(cmd, q) {
    return { sys: 'entity', cmd, ...this.parts, q, qent: { entity$: this.canon } };
  }

  /**
   * Saves `data` (an object): a create when it has no `id` (an `id$` picks the id), else a
   * merge into the stored record (created when unknown). Returns the stored entity.
   */
  save(data) {
    if (!isObject(data)) throw WasmecaError.invalidInput(`an entity is a JSON object, not ${JSON.stringify(data)}`);
    const msg = this.message('save', {});
    msg.ent = { ...data, entity$: this.canon };
    return act(msg);
  }

  /** The entity with this id (a string or a number), or the first matching a query object; null when there is none. */
  load(q) {
    return act(this.message('load', asQuery(q))) ?? null;
  }

  /** The entities matching a query object (`{}`, the default, for all; `sort$`, `skip$`, `limit$`, `fields$`): an array. */
  list(q = {}) {
    const found = act(this.message('list', q));
    if (found === null || found === undefined) return [];
    if (!Array.isArray(found)) throw new WasmecaError('entity_invalid', `list answered ${JSON.stringify(found)}, not an array`);
    return found;
  }

  /**
   * Removes the entity with this id (or the first matching a query object; every match with
   * `all$: true`) and returns the removed one, or null when there was none.
   */
  remove(q) {
    const query = { load$: true, ...asQuery(q) };
    return act(this.message('remove', query)) ?? null;
  }
}

/**
 * The entity type `canon` (`item`, `shop/item`, `zone/shop/item`) of the host's store:
 *
 *   const items = entity('shop/item');
 *   const apple = items.save({ name: 'apple', price: 1.5 });
 *   items.load(apple.id);                       // the entity, or null
 *   items.list({ sort$: { price: -1 }, limit$: 10 });
 *   items.remove(apple.id);
 */
export function entity(canon) {
  return new Entity(canon);
}

/** Acts `role:cache,cmd:<cmd>` with a key and, when given, a value. */
function cacheAct(cmd, key, val) {
  const msg = { role: 'cache', cmd, key: String(key) };
  if (val !== undefined) msg.val = val;
  return act(msg);
}

/**
 * The host's cache (`role:cache`): JSON values under string keys, with the expiry the host is
 * configured with.
 *
 *   cache.set('visits', 0);
 *   cache.incr('visits');                       // 1
 *   cache.get('nope');                          // null
 */
export const cache = Object.freeze({
  /** Stores `val` under `key`. */
  set(key, val) {
    cacheAct('set', key, val ?? null);
  },
  /** The value under `key`, or null when there is none. */
  get(key) {
    return cacheAct('get', key)?.value ?? null;
  },
  /** Stores `val` under `key` unless the key is taken (then throws `key_exists`). */
  add(key, val) {
    cacheAct('add', key, val ?? null);
  },
  /** Adds `by` (default 1) to the number under `key` and returns the new value; null when the key is missing (nothing is created). */
  incr(key, by = 1) {
    const value = cacheAct('incr', key, by)?.value;
    return typeof value === 'number' ? value : null;
  },
  /** Subtracts `by` (default 1) from the number under `key`, as `incr` adds. */
  decr(key, by = 1) {
    const value = cacheAct('decr', key, by)?.value;
    return typeof value === 'number' ? value : null;
  },
  /** Forgets `key` (missing keys too). */
  delete(key) {
    cacheAct('delete', key);
  },
});

/** Log text from console-style arguments: strings as they are, errors with their stack, the rest as JSON. */
function logText(args) {
  return args
    .map((a) => {
      if (typeof a === 'string') return a;
      if (a instanceof Error) return a.stack ? `${a}\n${a.stack}` : String(a);
      try {
        return JSON.stringify(a) ?? String(a);
      } catch {
        return String(a);
      }
    })
    .join(' ');
}

/**
 * Writes to the host's log, tagged with this plugin and the current transaction:
 * `log.info('loaded', n, 'users')`. Levels: trace, debug, info, warn, error.
 */
export const log = Object.freeze({
  trace: (...args) => host.log('trace', logText(args)),
  debug: (...args) => host.log('debug', logText(args)),
  info: (...args) => host.log('info', logText(args)),
  warn: (...args) => host.log('warn', logText(args)),
  error: (...args) => host.log('error', logText(args)),
});

/** A plugin: its name, version, state, actions, observers and routes. */
export class Plugin {
  /**
   * @param {string} name the plugin's name, e.g. `user`
   * @param {string} version a semantic version, e.g. `1.0.0`
   * @param {any} [state] given to every handler, kept for the life of the instance
   */
  constructor(name, version, state = {}) {
    /** Manifest name. */
    this.name = name;
    /** Manifest version (semver). */
    this.version = version;
    /** State shared by every handler. */
    this.state = state;
    /** Actions in the order added: `{pattern, example, handler}` (later ones override earlier ones on the same pattern). */
    this.actions = [];
    /** seneca-web route sets. */
    this.routeSets = [];
    /** Observers in the order added: `{pattern, handler}`. */
    this.observers = [];
  }

  /**
   * Adds an observer for an event pattern (`evt:user,cmd:created`): the handler gets
   * `(event, state)` for every event the pattern matches (a Msg, with `event$`, its id, and
   * `tx$`). What it returns is discarded; a thrown error (or a rejected Promise) means "not
   * handled": the host delivers the event again and dead-letters it after its attempts.
   */
  observe(pattern, handler) {
    if (typeof handler !== 'function') throw new TypeError(`observe('${pattern}'): the handler must be a function`);
    this.observers.push({ pattern, handler });
    return this;
  }

  /**
   * Adds an action for a pattern (`cmd:salute`, `role:user,cmd:*`). The handler gets
   * `(msg, state)` and answers an object, an array or null (or a Promise of one).
   */
  add(pattern, handler) {
    if (typeof handler !== 'function') throw new TypeError(`add('${pattern}'): the handler must be a function`);
    this.actions.push({ pattern, example: undefined, handler });
    return this;
  }

  /** Attaches an example message (a JSON object) to the action added last (used by `wasmeca check`). */
  example(msg) {
    const last = this.actions[this.actions.length - 1];
    if (last) last.example = msg;
    return this;
  }

  /**
   * Declares seneca-web route sets (one object or an array):
   * `{prefix: '/user', pin: 'module:user,if:*', map: {list: {GET: true, name: ''}}}`.
   */
  routes(routes) {
    if (Array.isArray(routes)) this.routeSets.push(...routes);
    else this.routeSets.push(routes);
    return this;
  }

  /** The WIT manifest record. */
  manifest() {
    return {
      name: this.name,
      version: this.version,
      actions: this.actions.map((a) => ({
        pattern: a.pattern,
        example: a.example === undefined ? undefined : JSON.stringify(a.example),
      })),
      routes: JSON.stringify(this.routeSets),
      observers: this.observers.map((o) => ({ pattern: o.pattern, example: undefined })),
    };
  }

  /** Runs observer `index` on an event object; returns undefined, a Promise of it, or throws. */
  observeEvent(index, data) {
    const def = this.observers[index];
    if (!def) throw new WasmecaError('invalid_observer', `this plugin has no observer ${index}`);
    const done = def.handler(new Msg(data), this.state);
    if (done && typeof done.then === 'function') {
      return done.then(
        () => undefined,
        (e) => {
          throw componentError(toWasmecaError(e, def.pattern, 'observer'));
        },
      );
    }
    return undefined;
  }

  /** Runs action `index` on a message object; answers JSON text, a Promise of it, or throws. */
  handle(index, data) {
    const def = this.actions[index];
    if (!def) throw new WasmecaError('invalid_action', `this plugin has no action ${index}`);
    const answer = def.handler(new Msg(data), this.state);
    if (answer && typeof answer.then === 'function') {
      return answer.then(
        (value) => resultText(value),
        (e) => {
          throw componentError(toWasmecaError(e, def.pattern));
        },
      );
    }
    return resultText(answer);
  }
}

/** A handler's answer as JSON text (undefined counts as null, like Seneca). */
function resultText(value) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value instanceof Msg ? value.data : value);
  } catch (e) {
    throw new WasmecaError('invalid_result', `the result cannot be written as JSON: ${e.message}`);
  }
  if (text === undefined) throw new WasmecaError('invalid_result', `the result cannot be written as JSON (${typeof value})`);
  return text;
}

/**
 * Any thrown value as a WasmecaError: kept as it is, or (logged with its stack and) wrapped as
 * Seneca's `act_execute` for an action, `init_failed` for the setup function.
 */
function toWasmecaError(e, pattern, kind = 'action') {
  if (e instanceof WasmecaError) return e;
  const name = e instanceof Error ? e.name : typeof e;
  const text = e instanceof Error ? e.message : String(e);
  const where = pattern === null ? 'init' : `${kind} ${pattern}`;
  try {
    host.log('error', `${where} failed: ${e instanceof Error && e.stack ? `${e}\n${e.stack}` : text}`);
  } catch {
    // logging must never hide the error
  }
  const [code, message] =
    pattern === null
      ? ['init_failed', `plugin init failed: ${text}`]
      : kind === 'observer'
        ? ['observe_failed', `observer ${pattern} failed: ${text}`]
        : ['act_execute', `seneca: Action ${pattern} failed: ${text}.`];
  return new WasmecaError(code, message, { details: { name }, status: validStatus(e?.status ?? e?.statusCode) });
}

/** What componentize-js turns into the `err` case of a `result`: an Error whose `payload` is the WIT record. */
function componentError(err) {
  const e = new Error(err.message);
  e.payload = err.toRecord();
  return e;
}

/**
 * Exports a plugin as the `guest` interface: `export const guest = exportPlugin(setup)`.
 * `setup(options)` builds the Plugin from the options in the host's configuration (a Msg); it
 * runs in `init`, once per instance. A Plugin may also be given directly.
 *
 * @param {((options: Msg) => Plugin) | Plugin} setup
 */
export function exportPlugin(setup) {
  let plugin = null;
  return {
    init(options) {
      try {
        let data = {};
        try {
          const parsed = JSON.parse(options);
          if (isObject(parsed)) data = parsed;
        } catch {
          // not JSON: no options
        }
        plugin = setup instanceof Plugin ? setup : setup(new Msg(data));
        if (!(plugin instanceof Plugin)) throw new TypeError('the setup function must return a Plugin');
        return plugin.manifest();
      } catch (e) {
        throw componentError(toWasmecaError(e, null));
      }
    },

    handle(action, msg) {
      let pattern = `#${action}`;
      try {
        if (!plugin) throw new WasmecaError('not_initialised', 'handle called before init');
        pattern = plugin.actions[action]?.pattern ?? pattern;
        let data;
        try {
          data = JSON.parse(msg);
        } catch {
          data = undefined;
        }
        if (!isObject(data)) throw WasmecaError.invalidInput('the message is not a JSON object');
        return plugin.handle(action, data);
      } catch (e) {
        throw componentError(toWasmecaError(e, pattern));
      }
    },

    observe(observer, event) {
      let pattern = `#${observer}`;
      try {
        if (!plugin) throw new WasmecaError('not_initialised', 'observe called before init');
        pattern = plugin.observers[observer]?.pattern ?? pattern;
        let data;
        try {
          data = JSON.parse(event);
        } catch {
          data = undefined;
        }
        if (!isObject(data)) throw WasmecaError.invalidInput('the event is not a JSON object');
        return plugin.observeEvent(observer, data);
      } catch (e) {
        throw componentError(toWasmecaError(e, pattern, 'observer'));
      }
    },
  };
}
