/*
 * c-probe@0.1.0: exercises every part of wasmeca.h through a real host
 * (sdk/c/test/run.sh). Not an example to copy: see examples/c/salute-math.
 */
#include <stdlib.h>
#include <string.h>

#include "wasmeca.h"

static bool constructed;
__attribute__((constructor)) static void ctor(void) { constructed = true; }

static char *options_seen; /* kept between calls: our own copy */

/* Acts msg.forward; a failure comes back as a value. */
static const char *relay(wasmeca_value msg) {
  wasmeca_value answer;
  if (wasmeca_act(&answer, "%v", wasmeca_get(msg, "forward")))
    return wasmeca_fmt("{'ok':true,'answer':%v}", answer);
  const char *out = wasmeca_fmt("{'ok':false,'error':{'code':%s,'message':%s,'status':%d,'details':%j}}",
                                wasmeca_error_code(), wasmeca_error_message(),
                                wasmeca_error_status(), wasmeca_error_details());
  wasmeca_error_clear();
  return out;
}

/* Acts msg.forward; a failure is passed up unchanged. */
static const char *pass(wasmeca_value msg) {
  wasmeca_value answer;
  if (!wasmeca_act(&answer, "%v", wasmeca_get(msg, "forward"))) return NULL;
  return wasmeca_json(answer);
}

/* Acts msg.forward twice (shows that the other plugin keeps its state). */
static const char *twice(wasmeca_value msg) {
  wasmeca_value first, second;
  if (!wasmeca_act(&first, "%v", wasmeca_get(msg, "forward")) ||
      !wasmeca_act(&second, "%v", wasmeca_get(msg, "forward")))
    return NULL;
  return wasmeca_fmt("[%v,%v]", first, second);
}

/* Overrides role:math,cmd:sum and asks the overridden action. */
static const char *checked_sum(wasmeca_value msg) {
  wasmeca_value answer;
  if (!wasmeca_prior(&answer, msg)) return NULL;
  return wasmeca_fmt("{'answer':%v,'checked':true}", wasmeca_get(answer, "answer"));
}

static const char *echo(wasmeca_value msg) { return msg.text; } /* NUL-terminated: copied */

static const char *read_fields(wasmeca_value msg) {
  int64_t i = 0;
  double f = 0;
  bool b = false;
  bool has_i = wasmeca_i64(msg, "i", &i), has_f = wasmeca_f64(msg, "f", &f);
  bool has_b = wasmeca_bool(msg, "b", &b);
  int64_t big = 0;
  bool has_big = wasmeca_i64(msg, "big", &big);
  wasmeca_value deep = wasmeca_path(msg, "a.b.1.c");
  const char *key = NULL;
  wasmeca_value first;
  wasmeca_member(msg, 0, &key, &first);
  return wasmeca_fmt(
      "{'i':%D,'has_i':%b,'f':%n,'has_f':%b,'b':%b,'has_b':%b,'big':%D,'has_big':%b,"
      "'s':%s,'deep':%v,'deep_type':%d,'count':%d,'first_key':%s,'param':%s,'query':%v,"
      "'body':%v,'tx':%s,'missing':%v,'esc':'%r'}",
      i, has_i, f, has_f, b, has_b, big, has_big, wasmeca_str(msg, "s"), deep, (int)deep.type,
      (int)wasmeca_count(msg), key, wasmeca_param(msg, "id"), wasmeca_query(msg, "q"),
      wasmeca_body(msg), wasmeca_tx(msg), wasmeca_get(msg, "nope"), "quote\" back\\ tab\t");
}

static const char *bad(wasmeca_value msg) {
  (void)msg;
  return "{oops}";
}

static const char *nothing(wasmeca_value msg) {
  (void)msg;
  return NULL;
}

static const char *require(wasmeca_value msg) {
  const char *name = wasmeca_require_str(msg, "name");
  if (!name) return NULL;
  if (strcmp(name, "ghost") == 0) {
    wasmeca_not_found("no user %s", name);
    return wasmeca_fail_details("{'name':%s}", name);
  }
  return wasmeca_fmt("{'name':%s}", name);
}

static const char *logs(wasmeca_value msg) {
  wasmeca_log(WASMECA_TRACE, "trace line");
  wasmeca_debug("debug %d", 1);
  wasmeca_info("info from %s", wasmeca_str(msg, "who"));
  wasmeca_warn("warn");
  wasmeca_log(WASMECA_ERROR, "error \xff invalid utf-8 replaced");
  return "{}";
}

static const char *state(wasmeca_value msg) {
  (void)msg;
  return wasmeca_fmt("{'constructed':%b,'options':%j}", constructed, options_seen);
}

/* Entities and the cache: every helper once. The answer keeps only what does not
 * depend on generated ids. */
static const char *data(wasmeca_value msg) {
  const char *name = wasmeca_str(msg, "name");
  wasmeca_value saved, loaded, none, listed, removed, count, absent;
  if (!wasmeca_entity_save(&saved, "shop/item", "{'name':%s}", name) ||
      !wasmeca_entity_load(&loaded, "shop/item", "%v", wasmeca_get(saved, "id")) ||
      !wasmeca_entity_load(&none, "shop/item", "%s", "missing") ||
      !wasmeca_entity_list(&listed, "shop/item", "{'name':%s}", name) ||
      !wasmeca_entity_remove(&removed, "shop/item", "%v", wasmeca_get(saved, "id")) ||
      !wasmeca_cache_set("probe:n", "%d", 1) || !wasmeca_cache_incr(&count, "probe:n", 2) ||
      !wasmeca_cache_get(&absent, "probe:missing"))
    return NULL;
  return wasmeca_fmt("{'saved':%v,'loaded':%v,'missing':%v,'listed':%d,'removed':%v,"
                     "'count':%v,'absent':%v}",
                     wasmeca_get(saved, "name"), wasmeca_get(loaded, "name"), none,
                     (int)wasmeca_count(listed), wasmeca_get(removed, "name"), count, absent);
}

/* Publishes {evt:probe, n, fail}: the observer below counts it (or refuses it). */
static const char *publish(wasmeca_value msg) {
  if (!wasmeca_publish("{'evt':'probe','n':%v,'fail':%v}", wasmeca_get(msg, "n"),
                       wasmeca_get(msg, "fail")))
    return NULL;
  return "{\"published\":true}";
}

static int64_t observed;

static bool on_probe(wasmeca_value event) {
  bool fail = false;
  if (wasmeca_bool(event, "fail", &fail) && fail) {
    wasmeca_fail("refused", 0, "the event asked to fail");
    return false;
  }
  observed++;
  return true;
}

static const char *count_observed(wasmeca_value msg) {
  (void)msg;
  return wasmeca_fmt("{'observed':%D}", observed);
}

bool wasmeca_setup(wasmeca_value options) {
  if (wasmeca_bool(options, "refuse", &(bool){0}))
    return wasmeca_fail("bad_options", 0, "refused: %s", wasmeca_json(options)) != NULL;
  free(options_seen);
  options_seen = strdup(wasmeca_json(options));
  wasmeca_plugin("c-probe", "0.1.0");
  wasmeca_add("role:probe,cmd:relay", relay);
  wasmeca_add("role:probe,cmd:pass", pass);
  wasmeca_add("role:math,cmd:sum", checked_sum);
  wasmeca_example("{'role':'math','cmd':'sum','left':1,'right':2}");
  wasmeca_add("role:probe,cmd:echo", echo);
  wasmeca_add("role:probe,cmd:read", read_fields);
  wasmeca_add("role:probe,cmd:bad", bad);
  wasmeca_add("role:probe,cmd:nothing", nothing);
  wasmeca_add("role:probe,cmd:require", require);
  wasmeca_add("role:probe,cmd:log", logs);
  wasmeca_add("role:probe,cmd:state", state);
  wasmeca_add("role:probe,cmd:twice", twice);
  wasmeca_add("role:probe,cmd:data", data);
  wasmeca_add("role:probe,cmd:publish", publish);
  wasmeca_add("role:probe,cmd:observed", count_observed);
  wasmeca_observe("evt:probe", on_probe);
  wasmeca_routes("{'prefix':'/probe','pin':'role:probe,cmd:*','map':{'echo':{'GET':true}}}");
  wasmeca_routes("[{'prefix':'/p2','pin':'role:probe,cmd:*','map':{'state':true}}]");
  return true;
}
