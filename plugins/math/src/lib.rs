//! `math@1.0.0`: Seneca's getting-started example. `role:math,cmd:sum` and
//! `role:math,cmd:product` answer `{answer}` for `left` and `right`.

use wasmeca_sdk::{Msg, Plugin, Result, Value, json};

/// A number as JavaScript would print it: integral results stay integers (`3`, not `3.0`).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 { json!(n as i64) } else { json!(n) }
}

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("math", "1.0.0")
        .add("role:math,cmd:sum", |_, msg| {
            Ok(json!({ "answer": number(msg.require_f64("left")? + msg.require_f64("right")?) }))
        })
        .example(json!({ "role": "math", "cmd": "sum", "left": 1, "right": 2 }))
        .add("role:math,cmd:product", |_, msg| {
            Ok(json!({ "answer": number(msg.require_f64("left")? * msg.require_f64("right")?) }))
        })
        .example(json!({ "role": "math", "cmd": "product", "left": 3, "right": 4 })))
}

wasmeca_sdk::export!(plugin);
