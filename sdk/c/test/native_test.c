/*
 * Native test of wasmeca.c: the JSON scanner and writer, and the whole
 * canonical-ABI cycle (export call, answer, post-return free; import results
 * allocated "by the host" through cabi_realloc) against a fake host, so
 * AddressSanitizer and LeakSanitizer can check the memory rules. Run by
 * sdk/c/test/run.sh:
 *
 *   cc -g -fsanitize=address,undefined -Wno-attributes -I sdk/c -I sdk/c/gen \
 *      sdk/c/test/native_test.c sdk/c/test/probe.c sdk/c/wasmeca.c sdk/c/gen/plugin.c
 *
 * The generated code lays the return area out with sizeof(void*), so the
 * offsets below hold natively as they do on wasm32.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "wasmeca.h"

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size);
uint8_t *__wasm_export_exports_wasmeca_plugin_guest_init(uint8_t *arg, size_t len);
uint8_t *__wasm_export_exports_wasmeca_plugin_guest_handle(int32_t action, uint8_t *arg, size_t len);
void __wasm_export_exports_wasmeca_plugin_guest_init_post_return(uint8_t *ret);
void __wasm_export_exports_wasmeca_plugin_guest_handle_post_return(uint8_t *ret);
uint8_t *__wasm_export_exports_wasmeca_plugin_guest_observe(int32_t observer, uint8_t *arg, size_t len);
void __wasm_export_exports_wasmeca_plugin_guest_observe_post_return(uint8_t *ret);

/* Stands in for gen/plugin_component_type.o, a wasm object. */
void __component_type_object_force_link_plugin(void) {}

static int passed, failed;

static void check(int ok, const char *what, const char *got) {
  if (ok) {
    passed++;
  } else {
    failed++;
    printf("FAIL %s: got %s\n", what, got ? got : "(null)");
  }
}

static void check_str(const char *what, const char *got, const char *want) {
  check(got && strcmp(got, want) == 0, what, got);
}

#define P(off) (ret + (off) * sizeof(void *))
#define STR(off) (*(char **)P(off))
#define LEN(off) (*(size_t *)P((off) + 1))

/* Lifts a string the way the host does: copies it out of "guest memory". */
static char *lift(uint8_t *ret, int off) {
  char *s = malloc(LEN(off) + 1);
  if (LEN(off)) memcpy(s, STR(off), LEN(off));
  s[LEN(off)] = 0;
  return s;
}

/* Lowers a string the way the host does: into memory from cabi_realloc. */
static uint8_t *lower(const char *s, size_t *len) {
  *len = strlen(s);
  uint8_t *p = cabi_realloc(NULL, 0, 1, *len);
  memcpy(p, s, *len);
  return p;
}

/* The fake host's imports. */
static void answer_ok(uint8_t *ret, const char *json) {
  size_t n;
  *ret = 0;
  *(uint8_t **)P(1) = lower(json, &n);
  *(size_t *)P(2) = n;
}

static void answer_err(uint8_t *ret, const char *code, const char *message, const char *details, int status) {
  size_t n;
  *ret = 1;
  *(uint8_t **)P(1) = lower(code, &n), *(size_t *)P(2) = n;
  *(uint8_t **)P(3) = lower(message, &n), *(size_t *)P(4) = n;
  *P(5) = details != NULL;
  if (details) *(uint8_t **)P(6) = lower(details, &n), *(size_t *)P(7) = n;
  *P(8) = status != 0;
  *(uint16_t *)(P(8) + 2) = (uint16_t)status;
}

/* What the fake host was sent (act and publish), one message a line. */
static char sent[8192];

static void record(const uint8_t *msg, size_t len) {
  size_t have = strlen(sent);
  if (have + len + 2 < sizeof sent) memcpy(sent + have, msg, len), strcpy(sent + have + len, "\n");
}

/* Whether msg contains the text s. */
static bool has(const uint8_t *msg, size_t len, const char *s) {
  return memmem(msg, len, s, strlen(s)) != NULL;
}

/* The store's answers to the probe's `data` action. */
static const char *data_answer(const uint8_t *msg, size_t len) {
  if (has(msg, len, "\"cmd\":\"save\"")) return "{\"id\":\"i1\",\"name\":\"n\"}";
  if (has(msg, len, "missing")) return has(msg, len, "cache") ? "{\"value\":null}" : "null";
  if (has(msg, len, "\"cmd\":\"list\"")) return "[{\"id\":\"i1\"},{\"id\":\"i2\"}]";
  if (has(msg, len, "\"cmd\":\"incr\"")) return "{\"value\":3}";
  if (has(msg, len, "\"cmd\":\"set\"")) return "{\"key\":\"probe:n\"}";
  return "{\"id\":\"i1\",\"name\":\"n\"}";
}

void __wasm_import_wasmeca_plugin_host_act(uint8_t *msg, size_t len, uint8_t *ret) {
  record(msg, len);
  if (has(msg, len, "\"sys\":\"entity\"") || has(msg, len, "\"role\":\"cache\""))
    answer_ok(ret, data_answer(msg, len));
  else if (has(msg, len, "nope")) answer_err(ret, "act_not_found", "no pattern", NULL, 0);
  else if (has(msg, len, "teapot")) answer_err(ret, "teapot", "", "{\"a\":1}", 418);
  else if (has(msg, len, "empty")) answer_ok(ret, "");
  else answer_ok(ret, "{\"answer\":3}");
}

void __wasm_import_wasmeca_plugin_host_prior(uint8_t *msg, size_t len, uint8_t *ret) {
  (void)msg, (void)len;
  answer_ok(ret, "{\"answer\":5}");
}

void __wasm_import_wasmeca_plugin_host_publish(uint8_t *event, size_t len, uint8_t *ret) {
  record(event, len);
  if (has(event, len, "refuse")) answer_err(ret, "publish_refused", "no broker", NULL, 503);
  else *ret = 0;
}

void __wasm_import_wasmeca_plugin_host_log(int32_t level, uint8_t *text, size_t len) {
  (void)level, (void)text, (void)len;
}

/* Calls handle(action, msg) and returns "ok:<json>" or "err:<code>|<message>|<details>|<status>". */
static char *handle(int action, const char *msg) {
  size_t n;
  uint8_t *arg = lower(msg, &n);
  if (!n) arg = (uint8_t *)1; /* cabi_realloc(…, 0) gives `align`, never to be freed */
  uint8_t *ret = __wasm_export_exports_wasmeca_plugin_guest_handle(action, arg, n);
  char out[4096];
  if (*ret == 0) {
    char *a = lift(ret, 1);
    snprintf(out, sizeof out, "ok:%s", a);
    free(a);
  } else {
    char *c = lift(ret, 1), *m = lift(ret, 3), *d = *P(5) ? lift(ret, 6) : NULL;
    snprintf(out, sizeof out, "err:%s|%s|%s|%d", c, m, d ? d : "-", *P(8) ? *(uint16_t *)(P(8) + 2) : 0);
    free(c), free(m), free(d);
  }
  __wasm_export_exports_wasmeca_plugin_guest_handle_post_return(ret);
  return strdup(out);
}

/* Calls observe(observer, event) and returns "ok" or "err:<code>|<message>|<details>|<status>". */
static char *observe(int observer, const char *event) {
  size_t n;
  uint8_t *arg = lower(event, &n);
  if (!n) arg = (uint8_t *)1;
  uint8_t *ret = __wasm_export_exports_wasmeca_plugin_guest_observe(observer, arg, n);
  char out[1024] = "ok";
  if (*ret != 0) {
    char *c = lift(ret, 1), *m = lift(ret, 3), *d = *P(5) ? lift(ret, 6) : NULL;
    snprintf(out, sizeof out, "err:%s|%s|%s|%d", c, m, d ? d : "-", *P(8) ? *(uint16_t *)(P(8) + 2) : 0);
    free(c), free(m), free(d);
  }
  __wasm_export_exports_wasmeca_plugin_guest_observe_post_return(ret);
  return strdup(out);
}

static void check_observe(int observer, const char *event, const char *want) {
  char *got = observe(observer, event);
  char what[256];
  snprintf(what, sizeof what, "observe(%d, %.180s)", observer, event);
  check_str(what, got, want);
  free(got);
}

static void check_handle(int action, const char *msg, const char *want) {
  char *got = handle(action, msg);
  char what[256];
  snprintf(what, sizeof what, "handle(%d, %.180s)", action, msg);
  check_str(what, got, want);
  free(got);
}

static void json_tests(void) {
  /* validation */
  const char *good[] = {"{}", "[]", " null ", "0", "-0.5e+3", "\"\\u00e9\\ud83d\\ude00\"",
                        "{\"a\":[1,{\"b\":true}],\"c\":\"x\"}", "\"é 甲\""};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    wasmeca_error_clear();
    check(wasmeca_parse(good[i]).type != WASMECA_MISSING, "valid JSON", good[i]);
  }
  const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "\"\\x\"", "\"a\nb\"",
                       "\"\\u12\"", "tru", "{a:1}", "[1] 2", "\"\xff\"", "\"\xc0\xaf\"", "'a'", "NaN"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    wasmeca_error_clear();
    check(wasmeca_parse(bad[i]).type == WASMECA_MISSING, "invalid JSON rejected", bad[i]);
    check_str("invalid JSON code", wasmeca_error_code(), "invalid_json");
  }
  char deep[401];
  memset(deep, '[', 200), memset(deep + 200, ']', 200), deep[400] = 0;
  check(wasmeca_parse(deep).type == WASMECA_MISSING, "nesting limit", "200 x [");
  wasmeca_error_clear();
  check(wasmeca_parse_n(deep + 72, 256).type == WASMECA_ARRAY, "128 levels are fine", NULL);
  wasmeca_error_clear();

  /* reading */
  wasmeca_value m = wasmeca_parse("{\"a\":1,\"a\":2,\"s\\u0074r\":\"x\\\"y\\u00e9\\ud83d\\ude00\","
                                  "\"n\":\" 2.5 \",\"l\":[10,[20,{\"k\":\"v\"}]],\"t\":\"true\"}");
  int64_t i = 0;
  double f = 0;
  bool b = false;
  check(wasmeca_i64(m, "a", &i) && i == 2, "last duplicate key wins", NULL);
  check_str("escaped key and value", wasmeca_str(m, "str"), "x\"yé😀");
  check(wasmeca_f64(m, "n", &f) && f == 2.5, "numeric string", NULL);
  check(!wasmeca_i64(m, "n", &i), "2.5 is no integer", NULL);
  check(wasmeca_bool(m, "t", &b) && b, "\"true\"", NULL);
  check_str("path", wasmeca_json(wasmeca_path(m, "l.1.1.k")), "\"v\"");
  check(wasmeca_path(m, "l.7").type == WASMECA_MISSING, "index past the end", NULL);
  check(wasmeca_count(m) == 6 && wasmeca_count(wasmeca_get(m, "l")) == 2, "count", NULL);
  const char *key = NULL;
  wasmeca_value v;
  check(wasmeca_member(m, 2, &key, &v) && strcmp(key, "str") == 0, "member", key);
  check(!wasmeca_member(m, 6, &key, &v), "member past the end", NULL);
  wasmeca_value none = {WASMECA_MISSING, NULL, 0};
  check(wasmeca_get(none, "a").type == WASMECA_MISSING && wasmeca_count(none) == 0, "zero value", NULL);

  /* writing */
  check_str("fmt", wasmeca_fmt("{'s':%s,'r':'<%r>','j':%j,'v':%v,'d':%d,'D':%D,'b':%b,'p':'%%'}",
                               "a\"\\\n\x01", "it's", "[1]", wasmeca_get(m, "l"), -3, (int64_t)1 << 40, 1),
            "{\"s\":\"a\\\"\\\\\\n\\u0001\",\"r\":\"<it's>\",\"j\":[1],\"v\":[10,[20,{\"k\":\"v\"}]],"
            "\"d\":-3,\"D\":1099511627776,\"b\":true,\"p\":\"%\"}");
  check_str("fmt NULLs", wasmeca_fmt("[%s,%j,%v]", NULL, NULL, none), "[null,null,null]");
  check_str("numbers",
            wasmeca_fmt("[%n,%n,%n,%n,%n,%n,%n,%n]", 3.0, 0.1 + 0.2, -0.0, 1e21, 1.5e-7, 1.0 / 0.0,
                        9007199254740993.0, 123456.789),
            "[3,0.30000000000000004,0,1e+21,1.5e-7,null,9007199254740992,123456.789]");
  check_str("invalid UTF-8 in %s", wasmeca_fmt("%s", "a\xffz"), "\"a\xef\xbf\xbdz\"");
  check(wasmeca_fmt("{'a':}") == NULL, "invalid format result", NULL);
  check_str("its error", wasmeca_error_code(), "invalid_json");
  wasmeca_error_clear();
}

static void abi_tests(void) {
  size_t n;
  uint8_t *opts = lower("{\"n\":1}", &n);
  uint8_t *ret = __wasm_export_exports_wasmeca_plugin_guest_init(opts, n);
  check(*ret == 0, "init ok", NULL);
  char *name = lift(ret, 1), *routes = lift(ret, 7);
  check_str("name", name, "c-probe");
  check(LEN(5) == 14, "14 actions", NULL);
  check(LEN(9) == 1, "1 observer", NULL);
  uint8_t *obs = *(uint8_t **)P(9);
  check(*(size_t *)(obs + sizeof(void *)) == 9 && memcmp(*(char **)obs, "evt:probe", 9) == 0 &&
            obs[2 * sizeof(void *)] == 0,
        "the observer's pattern, without an example", NULL);
  uint8_t *acts = *(uint8_t **)P(5);
  check(acts[2 * sizeof(void *)] == 0 && acts[5 * sizeof(void *) + 2 * sizeof(void *)] == 0 &&
            acts[2 * 5 * sizeof(void *) + 2 * sizeof(void *)] == 1,
        "only action 2 has an example", NULL);
  check(strncmp(routes, "[{\"prefix\":\"/probe\"", 19) == 0 && strstr(routes, "},{\"prefix\":\"/p2\""),
        "routes joined into one array", routes);
  free(name), free(routes);
  __wasm_export_exports_wasmeca_plugin_guest_init_post_return(ret);

  check_handle(9, "{}", "ok:{\"constructed\":true,\"options\":{\"n\":1}}");
  check_handle(3, "{\"x\":\"é\"}", "ok:{\"x\":\"é\"}");
  check_handle(0, "{\"forward\":{\"cmd\":\"nope\"}}",
               "ok:{\"ok\":false,\"error\":{\"code\":\"act_not_found\",\"message\":\"no pattern\",\"status\":0,\"details\":null}}");
  check_handle(0, "{\"forward\":{\"cmd\":\"x\"}}", "ok:{\"ok\":true,\"answer\":{\"answer\":3}}");
  check_handle(1, "{\"forward\":{\"cmd\":\"teapot\"}}", "err:teapot||{\"a\":1}|418");
  check_handle(1, "{\"forward\":{\"cmd\":\"empty\"}}", "err:invalid_json|invalid JSON at byte 0: ``|-|500");
  check_handle(2, "{\"left\":1}", "ok:{\"answer\":5,\"checked\":true}");
  check_handle(5, "{}", "err:invalid_json|invalid JSON at byte 1: `{oops}`|-|500");
  check_handle(6, "{}", "err:invalid_result|the handler returned NULL without an error|-|0");
  check_handle(7, "{\"name\":\"ghost\"}", "err:not_found|no user ghost|{\"name\":\"ghost\"}|404");
  check_handle(7, "{\"name\":3}", "err:invalid_input|`name` must be a string, not 3|{\"field\":\"name\"}|400");
  check_handle(8, "{\"who\":\"me\"}", "ok:{}");
  check_handle(42, "{}", "err:invalid_action|this plugin has no action 42|-|0");
  check_handle(3, "[1]", "err:invalid_input|the message is not a JSON object|-|400");
  check_handle(3, "", "err:invalid_input|the message is not a JSON object|-|400");

  /* entities and the cache: the messages sent, and the answers read */
  sent[0] = 0;
  check_handle(11, "{\"name\":\"n\"}",
               "ok:{\"saved\":\"n\",\"loaded\":\"n\",\"missing\":null,\"listed\":2,\"removed\":\"n\","
               "\"count\":3,\"absent\":null}");
  check_str("entity and cache messages", sent,
            "{\"sys\":\"entity\",\"cmd\":\"save\",\"base\":\"shop\",\"name\":\"item\",\"qent\":{\"entity$\":\"-/shop/item\"},"
            "\"q\":{},\"ent\":{\"name\":\"n\",\"entity$\":\"-/shop/item\"}}\n"
            "{\"sys\":\"entity\",\"cmd\":\"load\",\"base\":\"shop\",\"name\":\"item\",\"qent\":{\"entity$\":\"-/shop/item\"},"
            "\"q\":{\"id\":\"i1\"}}\n"
            "{\"sys\":\"entity\",\"cmd\":\"load\",\"base\":\"shop\",\"name\":\"item\",\"qent\":{\"entity$\":\"-/shop/item\"},"
            "\"q\":{\"id\":\"missing\"}}\n"
            "{\"sys\":\"entity\",\"cmd\":\"list\",\"base\":\"shop\",\"name\":\"item\",\"qent\":{\"entity$\":\"-/shop/item\"},"
            "\"q\":{\"name\":\"n\"}}\n"
            "{\"sys\":\"entity\",\"cmd\":\"remove\",\"base\":\"shop\",\"name\":\"item\",\"qent\":{\"entity$\":\"-/shop/item\"},"
            "\"q\":{\"load$\":true,\"id\":\"i1\"}}\n"
            "{\"role\":\"cache\",\"cmd\":\"set\",\"key\":\"probe:n\",\"val\":1}\n"
            "{\"role\":\"cache\",\"cmd\":\"incr\",\"key\":\"probe:n\",\"val\":2}\n"
            "{\"role\":\"cache\",\"cmd\":\"get\",\"key\":\"probe:missing\"}\n");

  /* publish and observe */
  sent[0] = 0;
  check_handle(12, "{\"n\":1}", "ok:{\"published\":true}");
  check_str("the event sent", sent, "{\"evt\":\"probe\",\"n\":1,\"fail\":null}\n");
  check_handle(12, "{\"n\":\"refuse\"}", "err:publish_refused|no broker|-|503");
  check_observe(0, "{\"evt\":\"probe\",\"n\":1}", "ok");
  check_observe(0, "{\"evt\":\"probe\",\"fail\":true}", "err:refused|the event asked to fail|-|0");
  check_observe(3, "{}", "err:invalid_observer|this plugin has no observer 3|-|0");
  check_observe(0, "[]", "err:invalid_input|the event is not a JSON object|-|400");
  check_handle(13, "{}", "ok:{\"observed\":1}");

  /* refusing to start */
  opts = lower("{\"refuse\":true}", &n);
  ret = __wasm_export_exports_wasmeca_plugin_guest_init(opts, n);
  char *code = lift(ret, 1), *msg = lift(ret, 3);
  check(*ret == 1, "init refused", NULL);
  check_str("refusal code", code, "bad_options");
  check_str("refusal message", msg, "refused: {\"refuse\":true}");
  free(code), free(msg);
  __wasm_export_exports_wasmeca_plugin_guest_init_post_return(ret);
}

int main(void) {
  json_tests();
  abi_tests();
  printf("native: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
