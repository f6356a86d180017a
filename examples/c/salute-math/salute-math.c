/*
 * salute-math@1.0.0: the Rust seeds `salute` and `math` as one C plugin.
 *
 *   cmd:salute              -> {"id": <greetings so far>, "message": "Hello <name>!"}
 *   role:math,cmd:sum       -> {"answer": left + right}
 *   role:math,cmd:product   -> {"answer": left * right}
 *
 * `left`/`right` may be numbers or numeric strings; anything else answers an
 * `invalid_input` error (status 400). Build: ../../../sdk/c/build.sh (see
 * wasmeca.toml).
 */
#include "wasmeca.h"

/* Greetings made by this instance: statics live as long as the instance. */
static int64_t greetings;

static const char *salute(wasmeca_value msg) {
  const char *name = wasmeca_str(msg, "name");
  return wasmeca_fmt("{'id':%D,'message':'Hello %r!'}", ++greetings, name ? name : "World");
}

static const char *sum(wasmeca_value msg) {
  double left, right;
  if (!wasmeca_require_f64(msg, "left", &left) || !wasmeca_require_f64(msg, "right", &right))
    return NULL; /* the invalid_input error is pending */
  return wasmeca_fmt("{'answer':%n}", left + right);
}

static const char *product(wasmeca_value msg) {
  double left, right;
  if (!wasmeca_require_f64(msg, "left", &left) || !wasmeca_require_f64(msg, "right", &right))
    return NULL;
  return wasmeca_fmt("{'answer':%n}", left * right);
}

bool wasmeca_setup(wasmeca_value options) {
  (void)options;
  wasmeca_plugin("salute-math", "1.0.0");
  wasmeca_add("cmd:salute", salute);
  wasmeca_example("{'cmd':'salute','name':'World'}");
  wasmeca_add("role:math,cmd:sum", sum);
  wasmeca_example("{'role':'math','cmd':'sum','left':1,'right':2}");
  wasmeca_add("role:math,cmd:product", product);
  wasmeca_example("{'role':'math','cmd':'product','left':3,'right':4}");
  return true;
}
