/*
 * wasmeca.h — write wasmeca plugins in C.
 *
 * A plugin is a WebAssembly component that targets the `plugin` world of
 * wit/plugin.wit (wasmeca:plugin@0.2.0). This helper implements the world's
 * exports (`init`, `handle`, `observe`) for you and wraps its imports (`act`,
 * `prior`, `publish`, `log`), so a plugin is a setup function plus one C
 * function per action or observer:
 *
 *     #include "wasmeca.h"
 *
 *     static const char *salute(wasmeca_value msg) {
 *         const char *name = wasmeca_str(msg, "name");
 *         return wasmeca_fmt("{'message':'Hello %r!'}", name ? name : "World");
 *     }
 *
 *     bool wasmeca_setup(wasmeca_value options) {
 *         wasmeca_plugin("salute", "1.0.0");
 *         wasmeca_add("cmd:salute", salute);
 *         wasmeca_example("{'cmd':'salute','name':'World'}");
 *         return true;
 *     }
 *
 * Events: wasmeca_publish sends one, wasmeca_observe declares a function that
 * hears every event a pattern matches. Data that must outlive the instance
 * goes in the host's store: wasmeca_entity_save/load/list/remove (Seneca's
 * entity API, `sys:entity`) and wasmeca_cache_set/get/add/incr/decr/delete
 * (`role:cache`).
 *
 * Build with sdk/c/build.sh (see sdk/c/README.md).
 *
 * MEMORY. You never free anything the helper gives you. Every string or JSON
 * text it returns (wasmeca_str, wasmeca_fmt, wasmeca_act's answer, ...) lives
 * until the current call (setup or handler) returns, then the helper frees it.
 * To keep something between calls, copy it (strdup) into your own static
 * state. A handler may return any string: one from wasmeca_fmt, a literal, or
 * your own buffer; the helper copies it if it has to.
 *
 * STATE. One component instance is one copy of your statics, and the host
 * calls it one message at a time, so plain `static` variables are the
 * plugin's state (like the closure variables of a Node Seneca plugin). With
 * `instances = N` in wasmeca.toml each instance has its own copy.
 *
 * ERRORS. Functions that can fail return NULL or false and leave a pending
 * error (code, message, optional status and details). A handler that returns
 * NULL answers that error, so `if (!wasmeca_act(...)) return NULL;` passes a
 * failed nested act up unchanged (like Rust's `?`).
 *
 * JSON FORMATS. Every function that takes JSON text from you takes a format:
 * JSON in which a single quote (') stands for a double quote ("), so C needs
 * no backslashes, and % introduces an argument:
 *
 *     %s   const char *  a JSON string, quoted and escaped (NULL gives null)
 *     %r   const char *  the text escaped for use INSIDE a quoted string:
 *                        "{'message':'Hello %r!'}" (NULL gives nothing)
 *     %j   const char *  raw JSON text, inserted as is (NULL gives null)
 *     %v   wasmeca_value a value from a message, as JSON (missing gives null)
 *     %d   int           an integer
 *     %D   int64_t       an integer
 *     %n   double        a number as JavaScript prints it: 3 not 3.0,
 *                        0.1 not 0.10000000000000001; NaN and infinities
 *                        give null
 *     %b   int/bool      true or false
 *     %%                 a percent sign
 *
 * Text containing an apostrophe goes through %s or %r, never in the format.
 * The argument types are not converted (C varargs): cast where they differ,
 * `%n` with `(double)count`, `%D` with `(int64_t)n`.
 * The result of a format is checked: invalid JSON is an error (code
 * `invalid_json`) naming the offset, so typos show up at the first call.
 */
#ifndef WASMECA_H
#define WASMECA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* JSON values                                                              */
/* ------------------------------------------------------------------------ */

/** The kind of a JSON value. WASMECA_MISSING means "not there" (absent key,
 *  index out of range, read from something that is not an object/array). */
typedef enum wasmeca_type {
  WASMECA_MISSING = 0,
  WASMECA_NULL,
  WASMECA_BOOL,
  WASMECA_NUMBER,
  WASMECA_STRING,
  WASMECA_ARRAY,
  WASMECA_OBJECT,
} wasmeca_type;

/** A JSON value: a view of `len` bytes of JSON text (not NUL-terminated),
 *  never copied. The message a handler gets is a WASMECA_OBJECT value. */
typedef struct wasmeca_value {
  wasmeca_type type;
  const char *text;
  size_t len;
} wasmeca_value;

/** Parses JSON text (NUL-terminated). Invalid JSON gives a MISSING value and
 *  a pending `invalid_json` error. The value views `json`: keep it alive. */
wasmeca_value wasmeca_parse(const char *json);

/** Like wasmeca_parse, for `len` bytes that need no NUL. */
wasmeca_value wasmeca_parse_n(const char *json, size_t len);

/** The member `key` of an object (the last one if repeated), else MISSING. */
wasmeca_value wasmeca_get(wasmeca_value object, const char *key);

/** Follows a path of keys separated by dots: "args.params.id". */
wasmeca_value wasmeca_path(wasmeca_value object, const char *path);

/** Element `index` of an array, else MISSING. */
wasmeca_value wasmeca_at(wasmeca_value array, size_t index);

/** Number of elements of an array or members of an object (0 otherwise). */
size_t wasmeca_count(wasmeca_value array_or_object);

/** Member `index` of an object, for iteration: its key (decoded, lives until
 *  the call returns) and value. False past the end. */
bool wasmeca_member(wasmeca_value object, size_t index, const char **key,
                    wasmeca_value *value);

/** The value as text: a string's decoded UTF-8 contents (a `\u0000` escape
 *  ends it early), else NULL. Lives until the call returns. */
const char *wasmeca_as_str(wasmeca_value v);

/** A number, also from a numeric string ("1.5", " 2 ", "-3e2": REST params
 *  and query values are strings). False for anything else. */
bool wasmeca_as_f64(wasmeca_value v, double *out);

/** An integer (a number without fraction, or an integer string). */
bool wasmeca_as_i64(wasmeca_value v, int64_t *out);

/** true/false, or the strings "true"/"false". */
bool wasmeca_as_bool(wasmeca_value v, bool *out);

/** The value's JSON text, NUL-terminated (lives until the call returns);
 *  "null" for MISSING. */
const char *wasmeca_json(wasmeca_value v);

/* Shortcuts for the members of a message (an object). */

/** The string under `key`, or NULL when absent or not a string. */
const char *wasmeca_str(wasmeca_value msg, const char *key);
/** The number under `key` (or a numeric string), into *out; false if none. */
bool wasmeca_f64(wasmeca_value msg, const char *key, double *out);
/** The integer under `key` (or an integer string), into *out; false if none. */
bool wasmeca_i64(wasmeca_value msg, const char *key, int64_t *out);
/** The boolean under `key` (or "true"/"false"), into *out; false if none. */
bool wasmeca_bool(wasmeca_value msg, const char *key, bool *out);

/** A number that must be there: else false and a pending `invalid_input`
 *  error (status 400, details {"field": key}) like the Rust SDK's:
 *  "`left` must be a number, not \"x\"" or "`left` is missing; ...". */
bool wasmeca_require_f64(wasmeca_value msg, const char *key, double *out);
/** A string that must be there: else NULL and a pending `invalid_input`. */
const char *wasmeca_require_str(wasmeca_value msg, const char *key);

/** The transaction id (`tx$`) of the message, or NULL. */
const char *wasmeca_tx(wasmeca_value msg);
/** A REST path parameter (`args.params.<name>`, seneca-web's shape). */
const char *wasmeca_param(wasmeca_value msg, const char *name);
/** A REST query parameter (`args.query.<name>`): a string, or an array of
 *  strings for repeated keys. */
wasmeca_value wasmeca_query(wasmeca_value msg, const char *name);
/** The REST request body (`args.body`). */
wasmeca_value wasmeca_body(wasmeca_value msg);

/* ------------------------------------------------------------------------ */
/* Building JSON                                                            */
/* ------------------------------------------------------------------------ */

/** Builds JSON text from a format (see JSON FORMATS above). Returns the text
 *  (lives until the call returns), or NULL with a pending `invalid_json`
 *  error when the result is not valid JSON. */
const char *wasmeca_fmt(const char *format, ...);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/** Sets the pending error and returns NULL, so a handler can write
 *  `return wasmeca_fail("not_found", 404, "no user %s", id);`.
 *  `status` 0 means none (REST callers then get 500). The message is a
 *  printf format (plain C printf, not a JSON format). */
const char *wasmeca_fail(const char *code, int status, const char *message,
                         ...);
/** `invalid_input` with status 400. */
const char *wasmeca_invalid_input(const char *message, ...);
/** `not_found` with status 404. */
const char *wasmeca_not_found(const char *message, ...);
/** Adds JSON details (a JSON format) to the pending error; returns NULL. */
const char *wasmeca_fail_details(const char *format, ...);

/** The pending error's parts (NULL / 0 when there is none). After a failed
 *  wasmeca_act these describe the error the host returned. */
const char *wasmeca_error_code(void);
const char *wasmeca_error_message(void);
/** The pending error's details as JSON text, or NULL. */
const char *wasmeca_error_details(void);
int wasmeca_error_status(void);
/** Forgets the pending error (after handling a failed act yourself). */
void wasmeca_error_clear(void);

/* ------------------------------------------------------------------------ */
/* Declaring the plugin                                                     */
/* ------------------------------------------------------------------------ */

/** A handler: gets the message (a JSON object, meta keys such as `tx$`
 *  included) and answers JSON text, which must be an object, an array or
 *  `null`. NULL answers the pending error. */
typedef const char *(*wasmeca_handler)(wasmeca_value msg);

/** YOU WRITE THIS: called once per instance with the options from the host's
 *  configuration (`{}` when none). Declare the plugin and its actions, and
 *  return true; or return false after wasmeca_fail to refuse to start. */
bool wasmeca_setup(wasmeca_value options);

/** Names the plugin: `name` and a semantic `version` ("1.0.0"). */
void wasmeca_plugin(const char *name, const char *version);

/** Adds an action for a pattern (`cmd:salute`, `role:user,cmd:*`). Actions
 *  are added to the router in this order; on an equal pattern the later one
 *  wins and the earlier becomes its prior. */
void wasmeca_add(const char *pattern, wasmeca_handler handler);

/** Attaches an example message (a JSON format) to the action added last;
 *  `wasmeca check` and the documentation use it. */
void wasmeca_example(const char *format, ...);

/** An observer: gets an event (a JSON object, with `event$`, its id, and
 *  `tx$`) and returns true once it has handled it. False (after wasmeca_fail,
 *  or with the error of a failed wasmeca_act pending) means "not handled":
 *  the host delivers the event again and dead-letters it after its attempts.
 *  An observer answers nobody. */
typedef bool (*wasmeca_observer)(wasmeca_value event);

/** Adds an observer for an event pattern (`evt:user,cmd:created`). Every
 *  observer whose pattern matches an event hears it (not only the most
 *  specific one, unlike actions). */
void wasmeca_observe(const char *pattern, wasmeca_observer observer);

/** Declares seneca-web route sets (a JSON format giving one object or an
 *  array): "{'prefix':'/user','pin':'module:user,if:*','map':{'list':
 *  {'GET':true,'name':''}}}". May be called more than once. */
void wasmeca_routes(const char *format, ...);

/* ------------------------------------------------------------------------ */
/* Calling the host                                                         */
/* ------------------------------------------------------------------------ */

/** Acts a message (a JSON format): the host routes it to whichever plugin or
 *  peer serves the best matching pattern. On success *answer is the answer
 *  and true is returned; on failure false, with the host's error pending
 *  (`act_not_found`, `action_timeout`, the other action's own error ...).
 *  The message inherits the current `tx$`. */
bool wasmeca_act(wasmeca_value *answer, const char *format, ...);

/** Calls the action the current one overrode (Seneca's `prior`) with `msg`
 *  (usually the handler's own message); with none, the answer is the
 *  message's `default$` or null. Same return convention as wasmeca_act. */
bool wasmeca_prior(wasmeca_value *answer, wasmeca_value msg);

/** Publishes an event (a JSON format giving an object): every observer whose
 *  pattern matches it hears it, in this host and, when the host has a
 *  broker, in every service observing it. True once the event is accepted
 *  (no observer anywhere is not an error); false with the host's error
 *  pending. The event inherits the current `tx$`:
 *      if (!wasmeca_publish("{'evt':'user','cmd':'created','id':%s}", id))
 *        return NULL; */
bool wasmeca_publish(const char *format, ...);

/* ------------------------------------------------------------------------ */
/* Keeping data: entities and the cache                                     */
/* ------------------------------------------------------------------------ */
/*
 * An entity type is named by its canon, `name`, `base/name` or
 * `zone/base/name` ("shop/item"): the canon string is the handle. Queries
 * are JSON formats: an object (`{'color':'red','sort$':{'price':-1},
 * 'limit$':10}`; `{}` for all), or for load and remove an id alone ("%s"
 * with a string id, "%D" with a number). Like wasmeca_act, each returns
 * true with the answer in *out (which may be NULL when not wanted), or false
 * with the host's error pending.
 *
 *     wasmeca_value item, found;
 *     if (!wasmeca_entity_save(&item, "shop/item", "{'name':%s,'price':%n}", name, 1.5))
 *       return NULL;
 *     if (!wasmeca_entity_load(&found, "shop/item", "%v", wasmeca_get(item, "id")))
 *       return NULL;
 *     if (found.type == WASMECA_NULL) ... // no such item
 */

/** Saves an entity (a JSON format giving an object): a create when it has no
 *  `id` (an `id$` picks the id), else a merge into the stored record
 *  (created when unknown). *saved is the stored entity, with its id. */
bool wasmeca_entity_save(wasmeca_value *saved, const char *canon, const char *format, ...);

/** The entity with this id, or the first matching a query object: *found
 *  is it, or a WASMECA_NULL value when there is none. */
bool wasmeca_entity_load(wasmeca_value *found, const char *canon, const char *format, ...);

/** The entities matching a query object: *found is an array (empty when
 *  none match). */
bool wasmeca_entity_list(wasmeca_value *found, const char *canon, const char *format, ...);

/** Removes the entity with this id (or the first matching a query object;
 *  every match with `all$:true`): *removed is the removed one, or a
 *  WASMECA_NULL value when there was none. */
bool wasmeca_entity_remove(wasmeca_value *removed, const char *canon, const char *format, ...);

/** Stores a value (a JSON format) under `key` in the host's cache, with
 *  the expiry the host is configured with. */
bool wasmeca_cache_set(const char *key, const char *format, ...);

/** Like wasmeca_cache_set, unless the key is taken: then false with
 *  `key_exists` pending. */
bool wasmeca_cache_add(const char *key, const char *format, ...);

/** The value under `key` into *value: a WASMECA_NULL value when there is
 *  none. */
bool wasmeca_cache_get(wasmeca_value *value, const char *key);

/** Adds `by` to the number under `key`: *value is the new number, or a
 *  WASMECA_NULL value when the key is missing (nothing is created). A
 *  cached value that is not a number fails with `op_failed_nan`. */
bool wasmeca_cache_incr(wasmeca_value *value, const char *key, double by);

/** Subtracts `by` from the number under `key`, as wasmeca_cache_incr adds. */
bool wasmeca_cache_decr(wasmeca_value *value, const char *key, double by);

/** Forgets `key` (missing keys too). */
bool wasmeca_cache_delete(const char *key);

/** Log levels, as in the WIT `level` enum. */
typedef enum wasmeca_level {
  WASMECA_TRACE = 0,
  WASMECA_DEBUG,
  WASMECA_INFO,
  WASMECA_WARN,
  WASMECA_ERROR,
} wasmeca_level;

/** Writes a line (a printf format) to the host's log, tagged with the
 *  plugin's name and version and the current transaction id. */
void wasmeca_log(wasmeca_level level, const char *format, ...);

#define wasmeca_debug(...) wasmeca_log(WASMECA_DEBUG, __VA_ARGS__)
#define wasmeca_info(...) wasmeca_log(WASMECA_INFO, __VA_ARGS__)
#define wasmeca_warn(...) wasmeca_log(WASMECA_WARN, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif /* WASMECA_H */
