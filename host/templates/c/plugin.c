/*
 * {{name}}: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
 * `GET /{{name}}/hello?name=...`. Each greeting publishes the event `evt:{{name}},cmd:greeted`;
 * the observer below hears it and keeps the greeting in the host's entity store, which outlives
 * the instance: `role:{{name}},cmd:greetings` (`GET /{{name}}/greetings`) lists them.
 */
#include "wasmeca.h"

/* Greetings, in the host's entity store (base `{{name}}`, name `greeting`). */
#define GREETINGS "{{name}}/greeting"

/* Greetings made by this instance: statics live as long as the instance. */
static int64_t count;

static const char *hello(wasmeca_value msg) {
  const char *name = wasmeca_str(msg, "name");
  if (!name) {
    /* Over REST the name comes in the query string: args.query.name. */
    name = wasmeca_as_str(wasmeca_query(msg, "name"));
  }
  if (!name) name = "World";
  wasmeca_info("greeting %s", name);
  if (!wasmeca_publish("{'evt':'{{name}}','cmd':'greeted','name':%s}", name)) return NULL;
  return wasmeca_fmt("{'message':'Hello %r!','count':%D}", name, ++count);
}

static const char *greetings(wasmeca_value msg) {
  (void)msg;
  wasmeca_value list;
  if (!wasmeca_entity_list(&list, GREETINGS, "{'sort$':{'name':1}}")) return NULL;
  return wasmeca_json(list);
}

/* An observer: true once handled; false has the event delivered again. */
static bool greeted(wasmeca_value event) {
  return wasmeca_entity_save(NULL, GREETINGS, "{'name':%v}", wasmeca_get(event, "name"));
}

bool wasmeca_setup(wasmeca_value options) {
  (void)options;
  wasmeca_plugin("{{name}}", "0.1.0");
  wasmeca_add("role:{{name}},cmd:hello", hello);
  wasmeca_example("{'role':'{{name}}','cmd':'hello','name':'World'}");
  wasmeca_add("role:{{name}},cmd:greetings", greetings);
  wasmeca_observe("evt:{{name}},cmd:greeted", greeted);
  wasmeca_routes("{'prefix':'/{{name}}','pin':'role:{{name}},cmd:*','map':{'hello':true,'greetings':true}}");
  return true;
}
