/*
 * {{name}}: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
 * `GET /{{name}}/hello?name=...`.
 */
#include "wasmeca.h"

/* Greetings made by this instance: statics live as long as the instance. */
static int64_t count;

static const char *hello(wasmeca_value msg) {
  const char *name = wasmeca_str(msg, "name");
  if (!name) {
    /* Over REST the name comes in the query string: args.query.name. */
    name = wasmeca_str(wasmeca_get(wasmeca_get(msg, "args"), "query"), "name");
  }
  wasmeca_info("greeting %s", name ? name : "World");
  return wasmeca_fmt("{'message':'Hello %r!','count':%D}", name ? name : "World", ++count);
}

bool wasmeca_setup(wasmeca_value options) {
  (void)options;
  wasmeca_plugin("{{name}}", "0.1.0");
  wasmeca_add("role:{{name}},cmd:hello", hello);
  wasmeca_example("{'role':'{{name}}','cmd':'hello','name':'World'}");
  wasmeca_routes("{'prefix':'/{{name}}','pin':'role:{{name}},cmd:*','map':{'hello':true}}");
  return true;
}
